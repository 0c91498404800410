"""Hardware-in-the-loop client: stream a test split to a board agent and check every output word.

The agent (hw_models/agent.py; the protocol is in its docstring) serves the accelerator on a PYNQ
board, or the run's Verilator simulation on this machine. Both sides authenticate (the agent
proves it holds the token with a MAC over this side's nonce, before anything it says is used),
this side checks that the agent serves the run's bitfile or simulator (the SHA-256 of this
side's own copy), sends the frames in batches, compares
every returned word with FINN's python execution and keeps a journal (one fsync'd line per
verified batch) so that after the agent or the client is killed mid-batch, running again
finishes with no batch lost or counted twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import logging
import os
import secrets
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from flow.core.errors import DensiflowError, JournalError
from flow.ml.agreement import agrees
from hw_models import agent
from hw_models.agent import Manifest, ProtocolError

log = logging.getLogger(__name__)

JOURNAL_FORMAT = 1
CLIENT_MAX_MESSAGE = 1 << 30  # never accept more, whatever an agent declares


class HilError(DensiflowError):
    """HIL validation cannot run or finish: target, token, artefact, protocol or journal."""


# ---------------------------------------------------------------------------------------------
# typed data


class Estimate(BaseModel):
    """A throughput/latency figure to show next to the measured ones (FINN's, the RTL sim's)."""

    source: str
    fps: float | None = None
    latency_us: float | None = None


class Mismatch(BaseModel):
    """One output word that differs from the golden output."""

    frame: int  # index in the test split
    index: int  # word index within the frame's flattened output
    expected: float
    got: float


class SimCycles(BaseModel):
    """Simulated cycles of one request (rtlsim backend)."""

    total: int
    latency: int  # first frame
    steady: float | None  # cycles per frame after the first (None for one frame)


class ResultHeader(BaseModel):
    """The checked fields of an agent's result message."""

    batch: int
    sha256: str
    seconds: float = Field(ge=0)
    cycles: SimCycles | None = None


class BatchRecord(BaseModel):
    """One verified batch, as the journal keeps it."""

    batch: int
    start: int
    frames: int
    mismatches: int
    first_mismatches: list[Mismatch]
    predictions: list[int]
    round_trip_s: float
    device_s: float
    cycles: SimCycles | None
    out_sha256: str


class JournalHeader(BaseModel):
    """What a journal's records were verified against (a resume must match it)."""

    format: int = JOURNAL_FORMAT
    backend: str
    artefact_sha256: str
    frames: int
    batch_size: int
    inputs_sha256: str
    expected_sha256: str


class BatchTiming(BaseModel):
    """Timing of one batch: client round trip and the agent's backend time."""

    batch: int
    frames: int
    round_trip_s: float
    device_s: float


class HilOptions(BaseModel):
    """How the client streams and waits."""

    batch_size: int | None = Field(None, ge=1)  # default: the agent's most frames per request
    timeout_s: float = Field(120.0, gt=0)  # connect, and every read
    latency_probes: int = Field(3, ge=0, le=100)  # one-frame requests timed after the split
    fresh: bool = False  # discard the journal and start over
    show_mismatches: int = Field(10, ge=0, le=1000)


class HilEvent(BaseModel):
    """Progress: a batch sent or verified, a latency probe."""

    kind: Literal["sent", "verified", "probe"]
    batch: int
    frames_done: int
    frames_total: int


class HilResult(BaseModel):
    """Outcome of a HIL validation of the whole split (written to 08_hil/, summary.json)."""

    target: str
    backend: str
    artefact_sha256: str
    frames: int
    batch_size: int
    batches: int
    resumed_batches: int  # verified in an earlier, interrupted session
    output_words: int
    mismatches: int
    probe_mismatches: int
    first_mismatches: list[Mismatch]
    bit_exact: bool
    accuracy: float | None
    agreement_with_reference: float | None  # hardware class == PyTorch's (flow.ml.agreement)
    wall_fps: float  # frames / sum of batch round trips (packing, network, backend)
    device_fps: float  # frames / sum of the agent's backend time
    latency_ms: float | None  # median backend time of a one-frame request
    round_trip_latency_ms: float | None
    clock_mhz: float | None
    simulated_fps: float | None  # rtlsim: clock / steady simulated cycles per frame
    simulated_latency_us: float | None  # rtlsim: first frame's simulated cycles / clock
    estimates: list[Estimate]
    batch_timings: list[BatchTiming]
    session_s: float  # wall time of this call

    def summary_line(self) -> str:
        """One line for the terminal."""
        acc = "-" if self.accuracy is None else f"{100 * self.accuracy:.2f} %"
        verdict = "bit-exact" if self.bit_exact else "MISMATCH"
        return (f"HIL {self.target} ({self.backend}): {self.frames} frames, "
                f"{self.mismatches + self.probe_mismatches} of {self.output_words} words differ "
                f"({verdict}), accuracy {acc}, {self.wall_fps:.1f} frames/s wall, "
                f"{self.device_fps:.1f} frames/s on the device")


@dataclass(frozen=True)
class Golden:
    """The test split as the accelerator sees it, and what it must answer."""

    inputs: np.ndarray  # partition inputs, one frame per row
    expected: np.ndarray  # partition outputs by FINN's python execution, one frame per row
    labels: np.ndarray | None = None
    reference_logits: np.ndarray | None = None  # the trained network's (PyTorch's) logits


# ---------------------------------------------------------------------------------------------
# target, token, deployment folder


def parse_target(target: str) -> tuple[str, int]:
    """(host, port) of 'HOST:PORT' ('[::1]:PORT' for IPv6)."""
    host, sep, port = target.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise HilError(f"target {target!r} is not HOST:PORT (e.g. 127.0.0.1:{agent.DEFAULT_PORT})")
    return host, int(port)


def new_token(path: str | Path) -> Path:
    """Write a fresh random token to path, readable by its owner only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    os.chmod(path, 0o600)
    return path


def read_token(path: str | Path) -> bytes:
    """The shared token in a file."""
    try:
        return agent.read_token(path)
    except agent.AgentError as err:
        raise HilError(str(err)) from None


def wire_dtype(finn_dtype: str) -> str:
    """The numpy dtype on the wire that holds every value of a FINN DataType exactly."""
    from qonnx.core.datatype import DataType

    dt = DataType[finn_dtype]
    if not dt.is_integer():
        return "<f4"  # FINN's python execution computes in float32
    for name in ("|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8"):
        info = np.iinfo(np.dtype(name))
        if info.min <= dt.min() and dt.max() <= info.max:
            return name
    raise HilError(f"datatype {finn_dtype} does not fit in 64 bits")


def install_agent(folder: str | Path) -> Path:
    """Copy the board agent (hw_models/agent.py) into a deployment folder."""
    dest = Path(folder) / "agent.py"
    tmp = dest.with_name(f".agent.py.{os.getpid()}.tmp")
    shutil.copyfile(agent.__file__, tmp)
    os.replace(tmp, dest)
    return dest


def _write_deployment(folder: Path, io: dict, **fields) -> Manifest:
    """Merge into the folder's hil.json (the other backend's entries stay) and add agent.py."""
    fields = {k: v for k, v in fields.items() if v is not None}
    try:
        if (folder / agent.MANIFEST).is_file():
            old = agent.load_manifest(folder)
            if any(getattr(old, k) != v for k, v in io.items()):
                raise HilError(f"{folder / agent.MANIFEST} describes other inputs/outputs "
                               f"than {io}; use a new folder")
            manifest = replace(old, **fields)
        else:
            manifest = Manifest(**io, **fields)
    except agent.AgentError as err:
        raise HilError(str(err)) from None
    agent.write_manifest(folder, manifest)
    install_agent(folder)
    return manifest


def prepare_rtlsim_folder(dataflow_model, folder: str | Path, fpgapart: str, clock_mhz: float,
                          cache_dir: str | Path | None = None, max_frames: int = 256) -> Manifest:
    """Make `folder` a deployment for `--backend rtlsim`: the HDL of a folded, specialized
    dataflow (child) model in folder/sim_rtl, its Verilator simulator (built, or reused from
    cache_dir, by default folder/sim), hil.json and agent.py."""
    from hw_models.rtlsim import build_simulator, generate_rtl

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    rtl = generate_rtl(dataflow_model, folder / "sim_rtl", fpgapart=fpgapart,
                       clk_ns=1000.0 / clock_mhz)
    sim = build_simulator(rtl, cache_dir=folder / "sim" if cache_dir is None else cache_dir)
    sim_dir = Path(sim.build_dir).resolve()
    rel = sim_dir.relative_to(folder) if sim_dir.is_relative_to(folder) else sim_dir
    io = {"in_shape": tuple(sim.in_shape), "in_dtype": wire_dtype(sim.in_dtype),
          "out_shape": tuple(sim.out_shape), "out_dtype": wire_dtype(sim.out_dtype)}
    return _write_deployment(folder, io, sim_dir=str(rel), max_frames=max_frames,
                             clock_mhz=clock_mhz)


def prepare_pynq_folder(folder: str | Path, dataflow_model, clock_mhz: float,
                        bitfile: str = "bitfile/finn-accel.bit", driver: str = "driver",
                        platform: str = "zynq-iodma", max_frames: int = 256) -> Manifest:
    """Add hil.json and agent.py to a FINN deployment folder (bitfile, PYNQ driver) for
    `--backend pynq`; I/O shapes and datatypes from the dataflow (child) model."""
    from qonnx.core.modelwrapper import ModelWrapper

    model = dataflow_model if isinstance(dataflow_model, ModelWrapper) else ModelWrapper(
        str(dataflow_model))
    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    io = {"in_shape": tuple(int(x) for x in model.get_tensor_shape(iname)),
          "in_dtype": wire_dtype(model.get_tensor_datatype(iname).name),
          "out_shape": tuple(int(x) for x in model.get_tensor_shape(oname)),
          "out_dtype": wire_dtype(model.get_tensor_datatype(oname).name)}
    return _write_deployment(Path(folder).resolve(), io, bitfile=bitfile, driver=driver,
                             platform=platform, max_frames=max_frames, clock_mhz=clock_mhz)


def artefact_hashes(folder: str | Path) -> dict[str, str]:
    """The SHA-256 of each artefact a deployment folder holds, by backend (what to expect)."""
    try:
        manifest = agent.load_manifest(folder)
    except agent.AgentError as err:
        raise HilError(str(err)) from None
    found = {}
    for backend in agent.BACKENDS:
        try:
            found[backend] = agent.artefact_sha256(folder, manifest, backend)
        except agent.AgentError:
            continue
    if not found:
        raise HilError(f"deployment folder {folder} holds neither a simulator nor a bitfile")
    return found


# ---------------------------------------------------------------------------------------------
# connection


class AgentConnection:
    """An authenticated connection to an agent (a context manager)."""

    def __init__(self, target: str, token: bytes, timeout_s: float):
        host, port = parse_target(target)
        self.target, self.timeout_s = target, timeout_s
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout_s)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as err:
            raise HilError(f"cannot connect to the agent at {target}: {err}") from None
        try:
            self._handshake(token)
        except BaseException:
            self.sock.close()
            raise

    def _handshake(self, token: bytes) -> None:
        hello, _ = self._recv(agent.PRE_AUTH_MAX, "hello")
        if hello.get("protocol") != agent.PROTOCOL:
            raise HilError(f"agent {self.target} speaks protocol {hello.get('protocol')!r}, "
                           f"this client {agent.PROTOCOL}: copy the new agent.py to it")
        theirs, ours = str(hello.get("nonce")), agent.new_nonce()
        self._send({"type": "auth", "mac": agent.token_mac(token, theirs), "nonce": ours})
        ready, _ = self._recv(agent.MAX_HEADER + agent.PREFIX.size, "ready")
        proof = agent.agent_proof(token, ours, theirs).encode()
        if not hmac.compare_digest(proof, str(ready.get("proof", "")).encode()):
            raise HilError(f"agent {self.target} failed to authenticate: it does not hold this "
                           "run's token (an impostor, or the wrong --token-file); nothing it "
                           "sent is used")
        try:
            self.manifest = Manifest(
                in_shape=tuple(ready["in_shape"]), in_dtype=ready["in_dtype"],
                out_shape=tuple(ready["out_shape"]), out_dtype=ready["out_dtype"],
                max_frames=ready["max_frames"], clock_mhz=ready["clock_mhz"])
            self.backend, self.artefact = str(ready["backend"]), str(ready["artefact_sha256"])
        except (agent.AgentError, KeyError, TypeError) as err:
            raise HilError(f"agent {self.target} sent an invalid ready message: {err}") from None
        if self.manifest.max_message > CLIENT_MAX_MESSAGE:
            raise HilError(f"agent {self.target} wants messages of {self.manifest.max_message} "
                           f"bytes, more than this client's {CLIENT_MAX_MESSAGE}")

    def _send(self, header: dict, payload: bytes = b"") -> None:
        try:
            agent.send_message(self.sock, header, payload, self.timeout_s)
        except OSError as err:
            raise HilError(f"agent {self.target}: connection lost while sending "
                           f"({err}); run again to resume") from None

    def _recv(self, limit: int, want: str) -> tuple[dict, bytes]:
        try:
            header, payload = agent.recv_message(self.sock, limit, self.timeout_s)
        except ProtocolError as err:
            raise HilError(f"agent {self.target}: {err} (waiting for {want}, timeout "
                           f"{self.timeout_s:g} s); run again to resume") from None
        except OSError as err:
            raise HilError(f"agent {self.target}: connection lost waiting for {want} "
                           f"({err}); run again to resume") from None
        if header["type"] == "error":
            raise HilError(f"agent {self.target} refused ({header.get('code')}): "
                           f"{header.get('message')}")
        if header["type"] != want:
            raise HilError(f"agent {self.target} sent {header['type']!r}, expected {want!r}")
        return header, payload

    def send_batch(self, batch: int, frames: np.ndarray) -> None:
        """Send one batch of frames (wire dtype, one frame per row)."""
        meta, raw = agent.pack_array(frames, self.manifest.in_dtype)
        self._send({"type": "run", "batch": batch, **meta}, raw)

    def recv_result(self, batch: int, frames: int) -> tuple[np.ndarray, ResultHeader]:
        """The outputs of a batch sent before, checked (checksum, dtype, shape, frame count)."""
        m = self.manifest
        header, payload = self._recv(m.max_message, "result")
        try:
            out = agent.unpack_array(header, payload, m.out_dtype, m.out_shape[1:], frames)
            head = ResultHeader.model_validate(header)
        except ProtocolError as err:
            raise HilError(f"agent {self.target}: result of batch {batch}: {err}") from None
        except ValidationError as err:
            raise HilError(f"agent {self.target}: invalid result header for batch {batch}: "
                           f"{err.errors()[0]['msg']}") from None
        if head.batch != batch or out.shape[0] != frames:
            raise HilError(f"agent {self.target} answered batch {head.batch} with "
                           f"{out.shape[0]} frames; expected batch {batch}, {frames} frames")
        return out, head

    def close(self) -> None:
        """Say goodbye (best effort) and close."""
        try:
            agent.send_message(self.sock, {"type": "bye"}, timeout_s=1.0)
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> AgentConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# journal


RECOVER = "start over with `densiflow hil RUN --target HOST:PORT --fresh` (or delete it)"


def _journal_line(path: Path, number: int, line: bytes, model: type[BaseModel]) -> BaseModel:
    try:
        return model.model_validate_json(line)
    except ValidationError as err:
        raise JournalError(f"journal {path}, line {number}: damaged ({err.error_count()} bad "
                           f"fields); {RECOVER}") from None


def parse_journal(path: Path, data: bytes) -> tuple[JournalHeader | None, list[BatchRecord]]:
    """The header and records of a journal's complete lines (a torn last line is ignored);
    JournalError naming the first damaged line."""
    lines = data[: data.rfind(b"\n") + 1].splitlines()
    if not lines:
        return None, []
    return _journal_line(path, 1, lines[0], JournalHeader), [
        _journal_line(path, n, line, BatchRecord) for n, line in enumerate(lines[1:], start=2)]


def check_journal(path: str | Path) -> None:
    """JournalError if a journal's complete lines are damaged (read only, before connecting)."""
    path = Path(path)
    if path.is_file():
        parse_journal(path, path.read_bytes())


class Journal:
    """Append-only, fsync'd JSON lines: a header, then one record per verified batch; locked
    while a client uses it. A torn last line (a client killed while writing, a full disk) is cut
    off into JOURNAL.bad; a damaged complete line is a JournalError."""

    def __init__(self, path: str | Path, header: JournalHeader, fresh: bool = False):
        self.path, self.header = Path(path), header
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a+b")  # noqa: SIM115 - closed in close()
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise HilError(f"journal {self.path} is in use by another HIL client") from None
        try:
            self.records = self._load(fresh)
        except BaseException:
            self.file.close()
            raise

    def _load(self, fresh: bool) -> dict[int, BatchRecord]:
        if fresh:
            self.file.truncate(0)
        self.file.seek(0)
        data = self.file.read()
        old, recs = parse_journal(self.path, data)
        self._cut_torn_tail(data)
        if old is None:
            self._append_line(self.header.model_dump_json())
            return {}
        if old != self.header:
            changed = [k for k in JournalHeader.model_fields
                       if getattr(old, k) != getattr(self.header, k)]
            raise HilError(f"journal {self.path} belongs to another validation "
                           f"({', '.join(changed)} differ); delete it or start fresh")
        return self._index(recs)

    def _index(self, recs: list[BatchRecord]) -> dict[int, BatchRecord]:
        h, out = self.header, {}
        for rec in recs:
            start = rec.batch * h.batch_size
            ok = 0 <= start < h.frames and rec.start == start and rec.frames == min(
                h.batch_size, h.frames - start)
            if not ok or rec.batch in out:
                raise JournalError(f"journal {self.path}: batch {rec.batch} is "
                                   f"{'recorded twice' if ok else 'out of place'}; {RECOVER}")
            out[rec.batch] = rec
        return out

    def _cut_torn_tail(self, data: bytes) -> None:
        """Move an unterminated last line into JOURNAL.bad and truncate it away."""
        keep = data.rfind(b"\n") + 1
        if keep == len(data):
            return
        bad = self.path.with_name(self.path.name + ".bad")
        with open(bad, "ab") as f:
            f.write(data[keep:] + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.file.truncate(keep)
        self.file.seek(0, os.SEEK_END)
        log.warning("journal %s: cut off a torn last line (%d bytes, kept in %s)", self.path,
                    len(data) - keep, bad)

    def _append_line(self, line: str) -> None:
        self.file.write(line.encode() + b"\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def append(self, rec: BatchRecord) -> None:
        """Record a verified batch durably."""
        if rec.batch in self.records:
            raise HilError(f"journal {self.path}: batch {rec.batch} is already recorded")
        self._append_line(rec.model_dump_json())
        self.records[rec.batch] = rec

    def close(self) -> None:
        """Unlock and close."""
        self.file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# validation


def verify_batch(start: int, got: np.ndarray, expected: np.ndarray,
                 show: int) -> tuple[int, list[Mismatch]]:
    """Count of words that differ and the first `show` of them (frame, index, expected, got)."""
    n = got.shape[0]
    g = got.reshape(n, -1).astype(np.float64)
    e = expected.reshape(n, -1).astype(np.float64)
    bad = np.argwhere(g != e)
    first = [Mismatch(frame=start + int(f), index=int(i), expected=float(e[f, i]),
                      got=float(g[f, i])) for f, i in bad[:show]]
    return len(bad), first


def _frames(golden: Golden, m: Manifest) -> tuple[np.ndarray, np.ndarray]:
    """Inputs in the wire dtype and expected outputs, one frame per row, checked."""
    n = len(golden.inputs)
    in_frame, out_frame = m.in_shape[1:], m.out_shape[1:]
    inputs = np.asarray(golden.inputs)
    expected = np.asarray(golden.expected)
    if n < 1 or inputs.size != n * int(np.prod(in_frame)):
        raise HilError(f"golden inputs of shape {inputs.shape} are not frames of shape {in_frame}")
    if len(expected) != n or expected.size != n * int(np.prod(out_frame)):
        raise HilError(f"golden outputs of shape {expected.shape} are not {n} frames of shape "
                       f"{out_frame}")
    for name, extra in (("labels", golden.labels),
                        ("reference logits", golden.reference_logits)):
        if extra is not None and len(extra) != n:
            raise HilError(f"{len(extra)} {name} for {n} frames")
    wire = inputs.reshape((n, *in_frame)).astype(np.dtype(m.in_dtype))
    if not np.array_equal(wire.astype(np.float64), inputs.reshape(wire.shape)):
        raise HilError(f"golden inputs are not all representable as {m.in_dtype}, the "
                       "accelerator's input type")
    return wire, expected.reshape((n, *out_frame))


def _sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr, dtype=np.float64).tobytes()).hexdigest()


def _stream(conn: AgentConnection, journal: Journal, inputs: np.ndarray, expected: np.ndarray,
            options: HilOptions, emit: Callable[[HilEvent], None]) -> None:
    """Send every batch the journal lacks, verify it, record it."""
    n, bs = len(inputs), journal.header.batch_size
    for k, start in enumerate(range(0, n, bs)):
        if k in journal.records:
            continue
        stop = min(n, start + bs)
        t0 = time.perf_counter()
        conn.send_batch(k, inputs[start:stop])
        done = sum(r.frames for r in journal.records.values())
        emit(HilEvent(kind="sent", batch=k, frames_done=done, frames_total=n))
        out, head = conn.recv_result(k, stop - start)
        rtt = time.perf_counter() - t0
        count, first = verify_batch(start, out, expected[start:stop], options.show_mismatches)
        journal.append(BatchRecord(
            batch=k, start=start, frames=stop - start, mismatches=count, first_mismatches=first,
            predictions=out.reshape(stop - start, -1).argmax(1).tolist(), round_trip_s=rtt,
            device_s=head.seconds, cycles=head.cycles, out_sha256=head.sha256))
        emit(HilEvent(kind="verified", batch=k, frames_done=done + stop - start, frames_total=n))


def _probe_latency(conn: AgentConnection, inputs: np.ndarray, expected: np.ndarray, count: int,
                   emit: Callable[[HilEvent], None]) -> tuple[list[float], list[float], int]:
    """Round trips and backend times of one-frame requests (verified), and their mismatches."""
    rtts, devs, bad = [], [], 0
    for i in range(count):
        f = i % len(inputs)
        t0 = time.perf_counter()
        conn.send_batch(-1 - i, inputs[f:f + 1])
        out, head = conn.recv_result(-1 - i, 1)
        rtts.append(time.perf_counter() - t0)
        devs.append(head.seconds)
        bad += verify_batch(f, out, expected[f:f + 1], 0)[0]
        emit(HilEvent(kind="probe", batch=-1 - i, frames_done=len(inputs),
                      frames_total=len(inputs)))
    return rtts, devs, bad


def _check_artefact(conn: AgentConnection, artefacts: Mapping[str, str]) -> None:
    want = artefacts.get(conn.backend)
    if want is None:
        raise HilError(f"agent {conn.target} serves backend {conn.backend!r}; the run has "
                       f"artefacts for {', '.join(artefacts) or 'no backend'}")
    if conn.artefact != want:
        raise HilError(f"agent {conn.target} serves {conn.backend} artefact sha256 "
                       f"{conn.artefact[:16]}…, the run's is {want[:16]}…: deploy this run's "
                       "folder to the agent")


def run_hil(target: str, token: bytes, golden: Golden, artefacts: Mapping[str, str],
            journal: str | Path, options: HilOptions | None = None,
            estimates: Sequence[Estimate] = (),
            progress: Callable[[HilEvent], None] | None = None) -> HilResult:
    """Validate what an agent serves on the whole golden set, resuming from the journal.

    artefacts: the run's SHA-256 per backend (artefact_hashes of its deployment folder).
    Raises HilError when the validation cannot finish (connection, token, artefact, protocol,
    timeout); the journal keeps what was verified. Mismatching words do not raise: they are in
    the result (bit_exact False).
    """
    options = options or HilOptions()
    emit = progress or (lambda event: None)
    t0 = time.perf_counter()
    if not options.fresh:
        check_journal(journal)
    with AgentConnection(target, token, options.timeout_s) as conn:
        _check_artefact(conn, artefacts)
        inputs, expected = _frames(golden, conn.manifest)
        bs = options.batch_size or conn.manifest.max_frames
        if bs > conn.manifest.max_frames:
            raise HilError(f"batch size {bs} exceeds the agent's {conn.manifest.max_frames} "
                           "frames per request")
        header = JournalHeader(backend=conn.backend, artefact_sha256=conn.artefact,
                               frames=len(inputs), batch_size=bs, inputs_sha256=_sha256(inputs),
                               expected_sha256=_sha256(expected))
        with Journal(journal, header, options.fresh) as jr:
            resumed = len(jr.records)
            _stream(conn, jr, inputs, expected, options, emit)
            probes = _probe_latency(conn, inputs, expected, options.latency_probes, emit)
            records = [jr.records[k] for k in sorted(jr.records)]
    return _result(conn, golden, header, records, resumed, probes, list(estimates),
                   options.show_mismatches, time.perf_counter() - t0)


def _simulated(records: list[BatchRecord], clock_mhz: float | None) -> tuple[float | None, ...]:
    """(fps, latency µs) from the simulated cycles, when the agent simulates and a clock is set."""
    steady = [r.cycles.steady for r in records if r.cycles and r.cycles.steady]
    latency = [r.cycles.latency for r in records if r.cycles]
    if not clock_mhz or not latency:
        return None, None
    fps = clock_mhz * 1e6 / statistics.median(steady) if steady else None
    return fps, statistics.median(latency) / clock_mhz


def _result(conn: AgentConnection, golden: Golden, header: JournalHeader,
            records: list[BatchRecord], resumed: int, probes: tuple, estimates: list[Estimate],
            show: int, session_s: float) -> HilResult:
    rtts, devs, probe_bad = probes
    n = header.frames
    pred = np.array([p for r in records for p in r.predictions])
    mismatches = sum(r.mismatches for r in records)
    first = [m for r in records for m in r.first_mismatches][:show]
    sim_fps, sim_latency = _simulated(records, conn.manifest.clock_mhz)

    def fraction(hits: np.ndarray | None) -> float | None:
        return None if hits is None else float(np.mean(hits))

    return HilResult(
        target=conn.target, backend=conn.backend, artefact_sha256=conn.artefact, frames=n,
        batch_size=header.batch_size, batches=len(records), resumed_batches=resumed,
        output_words=n * int(np.prod(conn.manifest.out_shape[1:])), mismatches=mismatches,
        probe_mismatches=probe_bad, first_mismatches=first,
        bit_exact=mismatches == 0 and probe_bad == 0,
        accuracy=fraction(None if golden.labels is None
                          else pred == np.asarray(golden.labels).reshape(-1)),
        agreement_with_reference=fraction(None if golden.reference_logits is None
                                          else agrees(pred, golden.reference_logits)),
        wall_fps=n / sum(r.round_trip_s for r in records),
        device_fps=n / max(1e-12, sum(r.device_s for r in records)),
        latency_ms=1e3 * statistics.median(devs) if devs else None,
        round_trip_latency_ms=1e3 * statistics.median(rtts) if rtts else None,
        clock_mhz=conn.manifest.clock_mhz, simulated_fps=sim_fps, simulated_latency_us=sim_latency,
        estimates=estimates,
        batch_timings=[BatchTiming(batch=r.batch, frames=r.frames, round_trip_s=r.round_trip_s,
                                   device_s=r.device_s) for r in records],
        session_s=session_s)


# ---------------------------------------------------------------------------------------------
# an agent on this machine


def serve_run(run_dir: Path, folder: Path, token_file: Path, bind: str, port: int,
              announce: Callable[[str, int], None]) -> None:
    """Serve a run's deployment folder (rtlsim backend) in this process, until SIGTERM or SIGINT
    closes the port, holding the run folder's shared lock: `densiflow deploy` or `run`, which
    lock it exclusively, cannot replace what is served. announce(host, port) once listening."""
    from flow.run.folder import RunFolder

    args = agent.parse_args(["--folder", str(folder), "--backend", "rtlsim", "--token-file",
                             str(token_file), "--bind", bind, "--port", str(port)])
    with RunFolder(run_dir).lock(shared=True):
        try:
            server, srv = agent.start(args)
        except agent.AgentError as err:
            raise HilError(str(err)) from None
        with server:
            announce(*server.getsockname()[:2])
            agent.serve_until_stopped(server, srv)


@dataclass
class LocalAgent:
    """An agent process started on this machine (tests, bench); stop() ends it."""

    proc: subprocess.Popen
    host: str
    port: int
    artefact_sha256: str

    @property
    def target(self) -> str:
        """HOST:PORT."""
        return f"{self.host}:{self.port}"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate the agent (kill it if it does not exit within timeout_s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> LocalAgent:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _first_line(proc: subprocess.Popen, wait_s: float) -> str:
    """The first stdout line of a process, or what came within wait_s."""
    buf, deadline = b"", time.monotonic() + wait_s
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
    return buf.decode(errors="replace")


def start_agent(folder: str | Path, token_file: str | Path, backend: str = "rtlsim",
                port: int = 0, timeout_s: float = 30.0, extra_args: Sequence[str] = (),
                wait_s: float = 120.0, log_path: str | Path | None = None) -> LocalAgent:
    """Start the folder's agent.py on 127.0.0.1 and wait (up to wait_s) until it listens."""
    folder, token_file = Path(folder).resolve(), Path(token_file).resolve()  # agent's cwd: folder
    log_path = Path(log_path) if log_path else folder / "agent.log"
    cmd = [sys.executable, str(folder / "agent.py"), "--folder", str(folder), "--backend",
           backend, "--token-file", str(token_file), "--port", str(port), "--timeout",
           str(timeout_s), *extra_args]
    env = dict(os.environ)  # the rtlsim backend imports hw_models from this checkout
    root = str(Path(agent.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    with open(log_path, "ab") as errf:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, cwd=folder, env=env)
    words = _first_line(proc, wait_s).split()
    if len(words) != 5 or words[0] != "LISTENING":
        proc.kill()
        proc.wait(10)
        tail = log_path.read_text(errors="replace").splitlines()[-5:]
        raise HilError(f"the agent in {folder} did not start within {wait_s:g} s (exit "
                       f"{proc.returncode}): " + " | ".join(tail))
    return LocalAgent(proc, words[1], int(words[2]), words[4])
