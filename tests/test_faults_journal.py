"""Faults of the search's state: torn and damaged Optuna journals, exact trial counts on resume
and with two workers, and storage URLs checked before the baseline trains."""
from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from rich.console import Console

from flow import cli
from flow.core.errors import ConfigError, DensiflowError, JournalError
from flow.recipe.config import parse_recipe
from flow.search import run_search
from flow.search import study as study_mod
from flow.search.study import StudyJob, load_study, open_storage, optimize, recover_stale, worker_id

RECIPE = {"name": "j", "data": {"dataset": "digits", "limit": 300}, "train": {"epochs": 1},
          "method": {"name": "search", "trials": 5, "population": 4},
          "hardware": {"board": "pynq-z1", "target_fps": 50000}, "simulate": {"enabled": False}}


class Trained(Exception):
    """Raised by the patched baseline training: the search got past its start checks."""


@pytest.fixture
def no_training(monkeypatch):
    def baseline(*args, **kwargs):
        raise Trained

    monkeypatch.setattr("flow.steps.baseline", baseline)


def _toy(trial: optuna.Trial) -> tuple[float, float, float]:
    x = trial.suggest_float("x", 0.0, 1.0)
    return x, 1.0 - x, x * x


def _journal(out: Path, trials: int = 3) -> Path:
    """The journal of a real 3-trial study where `densiflow search` keeps recipe j's."""
    state = out / "search" / "j" / "state"
    state.mkdir(parents=True)
    load_study(open_storage(None, state), "s", 4, 0).optimize(_toy, n_trials=trials)
    return state / study_mod.JOURNAL


def _study(state: Path) -> optuna.Study:
    return load_study(open_storage(None, state), "s", 4, 0)


def _job(state: Path, trials: int) -> StudyJob:
    return StudyJob(study_name="s", storage_url=None, state_dir=state, trials=trials,
                    population=4, seed=0)


def _states(study: optuna.Study) -> list[TrialState]:
    return [t.state for t in study.get_trials(deepcopy=False)]


# ----------------------------------------------------------------------------- journals


def test_torn_last_line_is_cut_kept_in_bad_and_the_search_resumes(tmp_path, caplog,
                                                                 no_training):
    path = _journal(tmp_path)
    sound = path.read_bytes()
    last = sound.splitlines(keepends=True)[-1]
    torn = last[: len(last) // 2]  # a crash halfway through an append
    path.write_bytes(sound + torn)
    with caplog.at_level(logging.WARNING), pytest.raises(Trained):
        run_search(parse_recipe(RECIPE), tmp_path)
    assert path.read_bytes() == sound
    assert path.with_name("study.journal.bad").read_bytes() == torn
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    msg = warning.getMessage()
    assert "\n" not in msg and str(path) in msg and "study.journal.bad" in msg
    study = _study(path.parent)  # the study resumes: appends after a sound last line
    study.optimize(_toy, n_trials=2)
    assert _states(_study(path.parent)) == [TrialState.COMPLETE] * 5


def test_damaged_middle_line_is_one_line_naming_it_and_nothing_changes(tmp_path, monkeypatch,
                                                                       capsys, no_training):
    path = _journal(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = b"".join(lines[:2]) + b"\xff\xfe\x00garbage\n" + b"".join(lines[2:])
    path.write_bytes(damaged)
    recipe = tmp_path / "j.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    monkeypatch.setattr(cli, "console", Console(width=1000))  # no wrapping: count the lines
    assert cli.main(["search", str(recipe), "--out", str(tmp_path)]) != 0
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and "Traceback" not in out
    assert f"{path}: line 3 " in out and f"truncate -s {len(lines[0] + lines[1])} " in out
    assert path.read_bytes() == damaged and not path.with_name("study.journal.bad").exists()


def test_damaged_middle_line_recovery_command_works(tmp_path):
    """The `truncate -s` the error gives leaves a journal Optuna reads (the first 2 lines)."""
    path = _journal(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"{not json\n" + b"".join(lines[1:]))
    with pytest.raises(JournalError, match="line 2 ") as err:
        study_mod.check_start(None, path.parent)
    command = str(err.value).split("`")[3]
    assert command.startswith("truncate -s ")
    subprocess.run(command, shell=True, check=True, timeout=30)
    assert path.read_bytes() == lines[0]
    study_mod.check_start(None, path.parent)  # sound now


def test_the_run_method_checks_its_journal_before_anything(tmp_path, monkeypatch):
    """`search` (the method inside `densiflow run`) refuses a damaged journal before it prices,
    seeds or writes anything."""
    from flow.search import runner

    path = _journal(tmp_path)
    path.write_bytes(b"{torn\n" + path.read_bytes())

    def prepare(*args):
        raise AssertionError("the search started before checking its journal")

    monkeypatch.setattr(runner, "prepare_context", prepare)
    inputs = runner.SearchInputs(recipe=None, params=None, arch=None, data=None,
                                 float_model=None, min_bits=2)
    with pytest.raises(JournalError, match="line 1 "):
        runner.search(inputs, path.parent, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- trial counts


@pytest.mark.slow  # a subprocess or a study of its own: seconds
def test_failed_trials_count_so_the_study_ends_with_exactly_n(tmp_path, monkeypatch):
    def objective(trial: optuna.Trial):
        if trial.number == 1:
            raise DensiflowError("this plan cannot be built")
        return _toy(trial)

    monkeypatch.setattr(study_mod, "make_objective", lambda ctx: objective)
    optimize(None, _job(tmp_path, 3), 0)
    assert sorted(_states(_study(tmp_path)), key=str) == sorted(
        [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL], key=str)


@pytest.mark.slow  # a subprocess or a study of its own: seconds
def test_resume_after_a_crash_ends_with_exactly_n(tmp_path, monkeypatch):
    """3 trials, a crash leaving two running (a dead worker's: one sampled, one a queued point
    not suggested yet), resume asking for 5: 5 trials count -- the dead ones are failed, marked
    lost, their points queued again, and their retries count instead of them."""
    monkeypatch.setattr(study_mod, "make_objective", lambda ctx: _toy)
    optimize(None, _job(tmp_path, 3), 0)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    storage = open_storage(None, tmp_path)
    study = _study(tmp_path)
    sampled = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    study.enqueue_trial({"x": 0.25})
    queued = study.ask()
    for t in (sampled, queued):
        t.set_user_attr("worker", f"{worker_id().split(':')[0]}:{dead.pid}")
    assert recover_stale(study, storage, local=True) == 2
    optimize(None, _job(tmp_path, 5), 0)
    trials = _study(tmp_path).get_trials()
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 5 and len(trials) == 7
    for lost, retry in ((sampled, trials[5]), (queued, trials[6])):
        assert trials[lost.number].state == TrialState.FAIL and trials[lost.number].user_attrs[
            "lost"]
        assert retry.user_attrs["retry_of"] == lost.number
    assert trials[5].params == trials[sampled.number].params and trials[6].params == {"x": 0.25}


@pytest.mark.slow  # a subprocess or a study of its own: seconds
def test_two_workers_never_overshoot(tmp_path, monkeypatch):
    def slow(trial: optuna.Trial):
        time.sleep(0.3)
        return _toy(trial)

    monkeypatch.setattr(study_mod, "make_objective", lambda ctx: slow)
    _study(tmp_path)  # create it once, before two threads load it
    threads = [threading.Thread(target=optimize, args=(None, _job(tmp_path, 3), i))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert _states(_study(tmp_path)) == [TrialState.COMPLETE] * 3


# ----------------------------------------------------------------------------- storage URLs


@pytest.mark.parametrize("url, allowed", [
    ("postgresql+psycopg://densi:s3cret@127.0.0.1:1/db", "reachable"),
    ("mysql://densi:s3cret@127.0.0.1/db", "postgresql://..."),
])
def test_storage_is_checked_before_the_baseline_trains(tmp_path, no_training, url, allowed):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        run_search(parse_recipe(RECIPE), tmp_path, storage=url)
    msg = str(err.value)
    assert time.perf_counter() - t0 < 30
    assert msg.startswith("--storage ") and "densi:***@127.0.0.1" in msg and allowed in msg
    assert "s3cret" not in msg and "\n" not in msg


@pytest.mark.parametrize("record", [b'{"op_code": 99}\n', b"[" * 300_000 + b"\n"],
                         ids=["unknown operation", "deep nesting"])
def test_a_record_optuna_cannot_replay_is_one_line(tmp_path, record):
    """Found by a probe: a JSON record of an unknown operation (Optuna asserts on it) or a deeply
    nested line (RecursionError) in the middle gave a traceback."""
    path = _journal(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = b"".join(lines[:2]) + record + b"".join(lines[2:])
    path.write_bytes(damaged)
    with pytest.raises(JournalError) as err:
        study_mod.check_start(None, path.parent)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    assert "mv " in str(err.value) and path.read_bytes() == damaged
