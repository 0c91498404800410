"""The search on a real PostgreSQL server started by the test (Debian's `postgresql`): two
worker processes share one study through `postgresql://`, as workers on many machines would."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import optuna
import pytest
from helpers import skip_tier, tiny_recipe

from flow.recipe.config import parse_recipe
from flow.search import run_search

pytestmark = pytest.mark.slow


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user(cmd: list[str], user: str | None) -> list[str]:
    """initdb and postgres refuse to run as root: run them as `user` where we are root."""
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


@pytest.fixture(scope="module")
def postgres():
    """A throw-away server on a loopback port; yields its URL; stopped and removed after."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        skip_tier("postgres", "PostgreSQL server binaries not installed",
                  "apt-get install -y postgresql")
    user = "nobody" if os.geteuid() == 0 else None
    # not under pytest's tmp folder: that is private to root, and the server runs as `user`
    root = Path(tempfile.mkdtemp(prefix="densiflow-pg-"))
    root.chmod(0o755)
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if user:
        pw = pwd.getpwnam(user)
        for p in (root, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    port = _free_port()
    subprocess.run(_as_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "densiflow",
                             "--auth=trust", "-E", "UTF8"], user),
                   check=True, capture_output=True)
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=50"
    subprocess.run(_as_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", opts, "-w",
                             "-l", str(root / "server.log"), "start"], user),
                   check=True, capture_output=True, timeout=60)
    try:
        yield f"postgresql://densiflow@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                                 "-w", "stop"], user), capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_a_study_on_postgres(postgres, tmp_path):
    recipe = parse_recipe(tiny_recipe("pg", trials=8, finn="none", qat_top=1, report=False))
    outcome = run_search(recipe, tmp_path, workers=2, storage=postgres)
    assert outcome.trials >= 8 and outcome.chosen is not None
    assert "@" not in outcome.storage or "127.0.0.1" in outcome.storage
    study = optuna.load_study(study_name=outcome.study, storage=postgres)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == outcome.trials
    workers = {t.user_attrs["worker"] for t in done}
    assert len(workers) == 2  # both processes ran trials of the one study
    assert not (tmp_path / "search" / "pg" / "state" / "study.journal").exists()
    # a second search on the same database resumes the study: no new trials
    again = run_search(recipe, tmp_path, workers=1, storage=postgres)
    assert again.trials == outcome.trials and again.study == outcome.study


def test_unreachable_database_is_a_one_line_error(tmp_path):
    from flow.core.errors import ConfigError
    from flow.search.study import open_storage

    port = _free_port()  # nothing listens there
    with pytest.raises(ConfigError, match=r"--storage postgresql://u:\*\*\*@127.0.0.1") as err:
        open_storage(f"postgresql://u:secret@127.0.0.1:{port}/x", tmp_path)
    assert "secret" not in str(err.value) and "\n" not in str(err.value)
