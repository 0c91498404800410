"""densiflow board agent: serves an accelerator to the hardware-in-the-loop client over TCP.

One self-contained file (standard library and numpy at module level) that is copied into a
deployment folder and run there, on a PYNQ board or on the build machine; that is why it is one
module of ~600 lines (protocol, manifest, both backends, server) rather than several:

    python agent.py --folder DIR --backend {pynq,rtlsim} --token-file FILE
                    [--bind 127.0.0.1] [--port 7531] [--sim-dir DIR] [--timeout 30]
                    [--max-frames N] [--fault {flip,corrupt}  (testing the client only)]

It prints `LISTENING HOST PORT BACKEND ARTEFACT_SHA256` on stdout once it listens (--port 0
picks a free port), logs to stderr, and serves until SIGTERM or SIGINT (then it closes the port
and exits 0); a port it cannot bind exits 2 with one line.

Deployment folder (what each backend needs; the client reads the same folder from the run)
  hil.json    the Manifest: one frame's input/output shape (batch 1, FINN's normal shape) and
              wire dtype, the most frames per request, the clock, where the artefacts are
  agent.py    this file
  rtlsim      sim_dir (relative to the folder or absolute; --sim-dir overrides it): a built
              Verilator simulator, a folder hw_models.rtlsim.load_simulator() accepts; the
              backend imports hw_models.rtlsim (the densiflow checkout) and keeps its scratch
              files in tmp/ of the folder
  pynq        bitfile (with its .hwh beside it) and the driver folder: driver.py defining
              `io_shape_dict` and `FINNExampleOverlay` (FINN's driver_base interface: a settable
              `batch_size`, `execute(inputs) -> outputs` moving buffers by DMA); board only

Protocol 2
  message   magic b"DFH1" | header length H (uint32, big-endian) | payload length P (uint64, BE)
            | header: H bytes of UTF-8 JSON, an object with a "type" | payload: P raw bytes
  limits    H <= 64 KiB; H + P <= 4 KiB before authentication, <= ready.max_message after; both
            are checked before the body is read. Every read has a deadline (the agent's
            --timeout, the client's own); a peer that misses it is disconnected.
  session   agent  -> hello  {protocol, nonce}          nonce: 32 random bytes, hex
            client -> auth   {mac, nonce}               mac: hex HMAC-SHA256(token, agent's
                                                        nonce); nonce: the client's, 32 random
                                                        bytes, hex
            agent  -> ready  {proof, backend, artefact_sha256, in_shape, in_dtype, out_shape,
                              out_dtype, max_frames, max_message, clock_mhz}
                             proof: hex HMAC-SHA256(token, "agent " + client's nonce + " " +
                             agent's nonce): the client trusts nothing of an agent that cannot
                             prove it holds the token. Both sides compare with
                             hmac.compare_digest. Before authenticating, a peer has
                             HANDSHAKE_TIMEOUT_S (or --timeout, if shorter) for each read.
            then, any number of times:
            client -> run    {batch, dtype, shape, sha256} + frames as raw little-endian bytes;
                             dtype must be ready.in_dtype, shape [n, *in_shape[1:]] with
                             1 <= n <= max_frames, sha256 that of the payload
            agent  -> result {batch, dtype, shape, sha256, seconds, cycles} + outputs
                             (out_dtype, [n, *out_shape[1:]]); seconds: the backend's time;
                             cycles: {total, latency, steady} simulated cycles (rtlsim) or null
            client -> bye    (or it closes the connection)
  errors    agent -> error {code, message}, then it closes the connection. Codes: auth,
            protocol, size, timeout, checksum, dtype, shape, frames, backend.
  artefact  artefact_sha256 is SHA-256 of the bitfile (pynq) or of every file of the simulator
            folder, by relative path (rtlsim); the client checks it against the hash of its own
            copy of the run's artefact.
Each connection is handled in its own thread (at most MAX_CONNECTIONS at once), so a peer that
never authenticates delays nobody; authenticated sessions share the backend one request at a
time. The agent parses only JSON headers and raw arrays of the one allowed dtype (no pickle, no
eval), and writes no file because of what a client sends. There is no encryption: across an
untrusted network, tunnel the port (ssh -L).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import importlib.util
import json
import logging
import math
import os
import re
import secrets
import signal
import socket
import stat
import struct
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

try:  # inside densiflow the agent's errors are hardware errors; on a board it stands alone
    from hw_models.errors import HardwareError
except ImportError:  # pragma: no cover - the copy on a board
    HardwareError = Exception  # type: ignore[misc,assignment]

log = logging.getLogger("densiflow.agent")

PROTOCOL = 2
FORMAT = 1  # of hil.json
MANIFEST = "hil.json"
MAGIC = b"DFH1"
PREFIX = struct.Struct(">4sIQ")
MAX_HEADER = 64 * 1024
PRE_AUTH_MAX = 4 * 1024
MAX_FRAMES_LIMIT = 1 << 16
DEFAULT_PORT = 7531
HANDSHAKE_TIMEOUT_S = 5.0  # per read before a peer has authenticated
MAX_CONNECTIONS = 16  # open at once; more are closed at accept
NONCE = re.compile(r"[0-9a-f]{64}")
BACKENDS = ("rtlsim", "pynq")
WIRE_DTYPES = ("|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f4", "<f8")
FAULTS = ("flip", "corrupt")


class AgentError(HardwareError):
    """The agent cannot start: a bad deployment folder, token file or backend."""


class ProtocolError(HardwareError):
    """A peer broke the protocol (size, checksum, timeout, ...); `code` names the rule."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------------------
# deployment folder


@dataclass(frozen=True)
class Manifest:
    """hil.json: what the deployment serves and where its artefacts are (JSON-able)."""

    in_shape: tuple[int, ...]  # one frame, batch 1, FINN's normal shape (e.g. NHWC)
    in_dtype: str  # wire dtype, a numpy dtype string from WIRE_DTYPES
    out_shape: tuple[int, ...]
    out_dtype: str
    max_frames: int = 256  # frames per request
    clock_mhz: float | None = None
    sim_dir: str = "sim"  # rtlsim: the built simulator, relative to the folder or absolute
    bitfile: str = "bitfile/finn-accel.bit"  # pynq
    driver: str = "driver"  # pynq: folder with driver.py
    platform: str = "zynq-iodma"  # pynq: FINNExampleOverlay's platform
    format: int = FORMAT

    def __post_init__(self) -> None:
        for name in ("in_shape", "out_shape"):
            shape = getattr(self, name)
            if not (shape and all(type(x) is int and x > 0 for x in shape) and shape[0] == 1):
                raise AgentError(f"{MANIFEST}: {name} must be positive ints with batch 1 first, "
                                 f"got {list(shape)}")
        for name in ("in_dtype", "out_dtype"):
            if getattr(self, name) not in WIRE_DTYPES:
                raise AgentError(f"{MANIFEST}: {name} {getattr(self, name)!r} is not one of "
                                 f"{', '.join(WIRE_DTYPES)}")
        if not 1 <= self.max_frames <= MAX_FRAMES_LIMIT:
            raise AgentError(f"{MANIFEST}: max_frames must be in 1..{MAX_FRAMES_LIMIT}, "
                             f"got {self.max_frames}")
        if self.format != FORMAT:
            raise AgentError(f"{MANIFEST}: format {self.format} is not {FORMAT}; prepare the "
                             "folder again with this densiflow")

    @property
    def max_message(self) -> int:
        """The largest message either side may send after authentication."""
        frame = max(_frame_bytes(self.in_shape, self.in_dtype),
                    _frame_bytes(self.out_shape, self.out_dtype))
        return MAX_HEADER + self.max_frames * frame


def _frame_bytes(shape: tuple[int, ...], dtype: str) -> int:
    return math.prod(shape) * np.dtype(dtype).itemsize


def load_manifest(folder: str | Path) -> Manifest:
    """The manifest of a deployment folder, checked."""
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text())
        data["in_shape"], data["out_shape"] = tuple(data["in_shape"]), tuple(data["out_shape"])
        return Manifest(**data)
    except FileNotFoundError:
        raise AgentError(f"{folder} is no deployment folder: {MANIFEST} is missing") from None
    except (ValueError, KeyError, TypeError) as err:
        raise AgentError(f"{path} is not a valid manifest: {err}") from None


def write_manifest(folder: str | Path, manifest: Manifest) -> Path:
    """Write hil.json into the folder (atomically)."""
    path = Path(folder) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(manifest), indent=1) + "\n")
    os.replace(tmp, path)
    return path


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sim_folder(folder: str | Path, manifest: Manifest,
               sim_dir: str | Path | None = None) -> Path:
    """The simulator folder the rtlsim backend serves."""
    return Path(sim_dir) if sim_dir is not None else Path(folder) / manifest.sim_dir


def artefact_sha256(folder: str | Path, manifest: Manifest, backend: str,
                    sim_dir: str | Path | None = None) -> str:
    """SHA-256 of what a backend serves: the bitfile, or every file of the simulator folder."""
    if backend == "pynq":
        bitfile = Path(folder) / manifest.bitfile
        if not bitfile.is_file():
            raise AgentError(f"the bitfile {bitfile} is missing")
        return _file_sha256(bitfile)
    root = sim_folder(folder, manifest, sim_dir)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    if not files:
        raise AgentError(f"the simulator folder {root} is missing or empty")
    h = hashlib.sha256()
    for path in files:
        h.update(f"{path.relative_to(root).as_posix()}\0{_file_sha256(path)}\n".encode())
    return h.hexdigest()


def read_token(path: str | Path) -> bytes:
    """The shared token in a file (at least 16 characters, surrounding whitespace ignored)."""
    path = Path(path)
    try:
        token = path.read_bytes().strip()
    except OSError as err:
        raise AgentError(f"token file {path} cannot be read: {err.strerror}") from None
    if len(token) < 16:
        raise AgentError(f"token file {path} holds {len(token)} characters; use at least 16")
    if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("token file %s is readable by other users (chmod 600 it)", path)
    return token


def token_mac(token: bytes, nonce: str) -> str:
    """The client's authentication answer to the agent's nonce: hex HMAC-SHA256(token, nonce)."""
    return hmac.new(token, nonce.encode(), hashlib.sha256).hexdigest()


def agent_proof(token: bytes, client_nonce: str, agent_nonce: str) -> str:
    """The agent's proof that it holds the token, over the client's nonce (and its own)."""
    return token_mac(token, f"agent {client_nonce} {agent_nonce}")


def new_nonce() -> str:
    """32 random bytes, hex."""
    return secrets.token_hex(32)


# ---------------------------------------------------------------------------------------------
# messages


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ProtocolError("timeout", "read timed out: the peer sent no complete message")
        sock.settimeout(left)
        try:
            k = sock.recv_into(view[got:], min(n - got, 1 << 20))
        except TimeoutError:  # TimeoutError from Python 3.10 on; boards may run 3.8
            raise ProtocolError("timeout", "read timed out: the peer stopped sending") from None
        if k == 0:
            raise ProtocolError("closed", "the peer closed the connection")
        got += k
    return bytes(buf)


def recv_message(sock: socket.socket, max_bytes: int,
                 timeout_s: float) -> tuple[dict, bytes]:
    """One message (header, payload), refused before reading if it exceeds max_bytes."""
    deadline = time.monotonic() + timeout_s
    magic, hlen, plen = PREFIX.unpack(_recv_exact(sock, PREFIX.size, deadline))
    if magic != MAGIC:
        raise ProtocolError("protocol", f"not a densiflow HIL message (starts with {magic!r})")
    if hlen > MAX_HEADER or hlen + plen > max_bytes:
        raise ProtocolError("size", f"a message of {hlen + plen} bytes exceeds the limit of "
                                    f"{max_bytes} bytes")
    try:
        header = json.loads(_recv_exact(sock, hlen, deadline))
    except (ValueError, RecursionError):
        raise ProtocolError("protocol", "the message header is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("protocol", "the message header is not an object with a type")
    return header, _recv_exact(sock, plen, deadline)


def send_message(sock: socket.socket, header: dict, payload: bytes = b"",
                 timeout_s: float = 30.0) -> None:
    """Send one message (the whole of it within timeout_s)."""
    head = json.dumps(header, separators=(",", ":")).encode()
    sock.settimeout(timeout_s)
    sock.sendall(b"".join((PREFIX.pack(MAGIC, len(head), len(payload)), head, payload)))


def pack_array(arr: np.ndarray, dtype: str) -> tuple[dict, bytes]:
    """Header fields (dtype, shape, sha256) and the raw little-endian bytes of an array."""
    raw = np.ascontiguousarray(arr, dtype=np.dtype(dtype)).tobytes()
    return {"dtype": dtype, "shape": list(arr.shape),
            "sha256": hashlib.sha256(raw).hexdigest()}, raw


def unpack_array(header: dict, payload: bytes, dtype: str, frame_shape: tuple[int, ...],
                 max_frames: int) -> np.ndarray:
    """The frames a message carries, after checking dtype, shape, frame count, size, checksum."""
    if header.get("dtype") != dtype:
        raise ProtocolError("dtype", f"dtype {header.get('dtype')!r}; expected {dtype!r}")
    shape = header.get("shape")
    if not (isinstance(shape, list) and all(type(x) is int for x in shape)
            and shape[1:] == list(frame_shape)):
        raise ProtocolError("shape", f"shape {shape!r}; expected [frames, "
                                     f"{', '.join(map(str, frame_shape))}]")
    if not 1 <= shape[0] <= max_frames:
        raise ProtocolError("frames", f"{shape[0]} frames; 1 to {max_frames} per message")
    if len(payload) != shape[0] * math.prod(frame_shape) * np.dtype(dtype).itemsize:
        raise ProtocolError("size", f"{len(payload)} payload bytes do not hold shape {shape}")
    if header.get("sha256") != hashlib.sha256(payload).hexdigest():
        raise ProtocolError("checksum", "the payload's SHA-256 differs from its header's: "
                                        "corrupted in transit")
    return np.frombuffer(payload, dtype=np.dtype(dtype)).reshape(shape)


# ---------------------------------------------------------------------------------------------
# backends


class RtlsimBackend:
    """Frames through the run's Verilator simulation (imports hw_models.rtlsim)."""

    def __init__(self, manifest: Manifest, sim_dir: Path):
        from hw_models.rtlsim import load_simulator

        self.sim = load_simulator(sim_dir)
        for name, got, want in (("input", self.sim.in_shape, manifest.in_shape),
                                ("output", self.sim.out_shape, manifest.out_shape)):
            if tuple(got) != tuple(want):
                raise AgentError(f"the simulator in {sim_dir} has {name} shape {list(got)}, "
                                 f"{MANIFEST} says {list(want)}")

    def run(self, frames: np.ndarray) -> tuple[np.ndarray, dict | None]:
        """Outputs of the frames and the simulated cycles."""
        from hw_models.rtlsim import run_frames

        out, st = run_frames(self.sim, frames, node_stats=False)
        return out, {"total": st.total_cycles, "latency": st.first_frame_latency,
                     "steady": st.steady_cycles_per_frame}


class PynqBackend:
    """Frames through the overlay by DMA with the deployment's FINN driver (on a PYNQ board)."""

    def __init__(self, folder: Path, manifest: Manifest):
        if importlib.util.find_spec("pynq") is None:
            raise AgentError("backend pynq runs on a PYNQ board: the pynq package is missing "
                             "(use --backend rtlsim on this machine)")
        driver_dir = folder / manifest.driver
        bitfile = folder / manifest.bitfile
        for path in (driver_dir / "driver.py", bitfile):
            if not path.is_file():
                raise AgentError(f"backend pynq needs {path}, which is missing")
        sys.path.insert(0, str(driver_dir))  # driver.py imports driver_base from its folder
        spec = importlib.util.spec_from_file_location("densiflow_driver", driver_dir / "driver.py")
        driver = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(driver)
        self.out_shape = manifest.out_shape
        self.accel = driver.FINNExampleOverlay(
            bitfile_name=str(bitfile), platform=manifest.platform,
            io_shape_dict=driver.io_shape_dict, batch_size=1,
            fclk_mhz=manifest.clock_mhz or 100.0,
            runtime_weight_dir=str(driver_dir / "runtime_weights") + "/",
        )

    def run(self, frames: np.ndarray) -> tuple[np.ndarray, dict | None]:
        """Outputs of the frames (no cycle counts on a board)."""
        n = frames.shape[0]
        if self.accel.batch_size != n:
            self.accel.batch_size = n
        out = np.asarray(self.accel.execute(frames))
        return out.reshape((n, *self.out_shape[1:])), None


# ---------------------------------------------------------------------------------------------
# server


@dataclass(frozen=True)
class Served:
    """What one agent serves and how."""

    backend_name: str
    backend: RtlsimBackend | PynqBackend
    manifest: Manifest
    artefact: str
    token: bytes = field(repr=False)
    timeout_s: float
    fault: str | None = None  # testing only: "flip" alters a word, "corrupt" the payload
    busy: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def ready(self, proof: str) -> dict:
        """The ready message, with the proof of the token."""
        m = self.manifest
        return {"type": "ready", "proof": proof, "backend": self.backend_name,
                "artefact_sha256": self.artefact,
                "in_shape": list(m.in_shape), "in_dtype": m.in_dtype,
                "out_shape": list(m.out_shape), "out_dtype": m.out_dtype,
                "max_frames": m.max_frames, "max_message": m.max_message,
                "clock_mhz": m.clock_mhz}


def _to_wire(out: np.ndarray, dtype: str) -> np.ndarray:
    wire = np.asarray(out).astype(np.dtype(dtype))
    if not np.array_equal(wire.astype(np.float64), np.asarray(out, dtype=np.float64)):
        raise ProtocolError("backend", f"the backend's outputs are not representable as {dtype}")
    return wire


def _answer_run(conn: socket.socket, srv: Served, header: dict, payload: bytes) -> None:
    m = srv.manifest
    frames = unpack_array(header, payload, m.in_dtype, m.in_shape[1:], m.max_frames)
    with srv.busy:  # one request at a time on the backend
        t0 = time.perf_counter()
        try:
            out, cycles = srv.backend.run(frames)
        except Exception as err:  # the agent keeps serving whatever the backend raises
            raise ProtocolError("backend", f"{type(err).__name__}: {str(err)[:2000]}") from err
        seconds = time.perf_counter() - t0
    wire = _to_wire(out, m.out_dtype).reshape((frames.shape[0], *m.out_shape[1:]))
    if srv.fault == "flip":
        wire = wire.copy()
        wire.flat[0] += 1
    meta, raw = pack_array(wire, m.out_dtype)
    if srv.fault == "corrupt":
        raw = bytes([raw[0] ^ 0xFF]) + raw[1:]
    send_message(conn, {"type": "result", "batch": header.get("batch"), **meta,
                        "seconds": seconds, "cycles": cycles}, raw, srv.timeout_s)


def _session(conn: socket.socket, srv: Served) -> None:
    """Authenticate one client (and prove the token to it), then answer its run requests until
    it leaves."""
    nonce, pre_auth_s = new_nonce(), min(srv.timeout_s, HANDSHAKE_TIMEOUT_S)
    send_message(conn, {"type": "hello", "protocol": PROTOCOL, "nonce": nonce},
                 timeout_s=pre_auth_s)
    header, _ = recv_message(conn, PRE_AUTH_MAX, pre_auth_s)
    want = token_mac(srv.token, nonce).encode()
    if header["type"] != "auth" or not hmac.compare_digest(
            want, str(header.get("mac", "")).encode()):
        raise ProtocolError("auth", "authentication failed: the client's token is not the "
                                    "agent's")
    theirs = header.get("nonce")
    if not (isinstance(theirs, str) and NONCE.fullmatch(theirs)):
        raise ProtocolError("protocol", "the auth message lacks the client's nonce (64 hex "
                                        f"digits); this agent speaks protocol {PROTOCOL}")
    send_message(conn, srv.ready(agent_proof(srv.token, theirs, nonce)),
                 timeout_s=srv.timeout_s)
    while True:
        header, payload = recv_message(conn, srv.manifest.max_message, srv.timeout_s)
        if header["type"] == "bye":
            return
        if header["type"] != "run":
            raise ProtocolError("protocol", f"unexpected message type {header['type']!r}")
        _answer_run(conn, srv, header, payload)


def _handle(conn: socket.socket, peer: str, srv: Served, slots: threading.Semaphore) -> None:
    """One connection's session, its errors reported to the peer and logged."""
    try:
        with conn:
            try:
                _session(conn, srv)
            except ProtocolError as err:
                log.warning("%s: %s", peer, err)
                if err.code != "closed":
                    try:
                        send_message(conn, {"type": "error", "code": err.code,
                                            "message": str(err)}, timeout_s=HANDSHAKE_TIMEOUT_S)
                    except OSError:
                        pass
            except OSError as err:
                log.warning("%s: connection lost: %s", peer, err)
    finally:
        slots.release()


def serve(server: socket.socket, srv: Served) -> None:
    """Accept connections, each in its own thread, until the process is stopped."""
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
    while True:
        conn, peer = server.accept()
        if not slots.acquire(blocking=False):
            log.warning("%s: refused, %d connections are open", peer[0], MAX_CONNECTIONS)
            conn.close()
            continue
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_handle, args=(conn, peer[0], srv, slots), daemon=True).start()


class Stopped(BaseException):
    """SIGTERM or SIGINT reached a serving agent (a BaseException, like KeyboardInterrupt)."""


def _raise_stopped(signum: int, frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


def serve_until_stopped(server: socket.socket, srv: Served) -> None:
    """Serve until SIGTERM or SIGINT (call it from the main thread); the port is closed on
    return and the signal handlers are restored."""
    old = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with server:
            serve(server, srv)
    except Stopped as stop:
        log.info("%s: stopped serving", stop)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def make_backend(name: str, folder: Path, manifest: Manifest,
                 sim_dir: Path) -> RtlsimBackend | PynqBackend:
    """The named backend for a deployment folder."""
    if name == "pynq":
        return PynqBackend(folder, manifest)
    return RtlsimBackend(manifest, sim_dir)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The agent's command line."""
    return _parser().parse_args(argv)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="densiflow board agent for HIL validation")
    p.add_argument("--folder", required=True, help="the deployment folder (holds hil.json)")
    p.add_argument("--backend", required=True, choices=BACKENDS)
    p.add_argument("--token-file", required=True, help="file holding the shared token")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    p.add_argument("--sim-dir", help="rtlsim: the built simulator (default: hil.json sim_dir)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds allowed per read")
    p.add_argument("--max-frames", type=int, help="lower hil.json's frames per request")
    p.add_argument("--fault", choices=FAULTS, help="testing only: send wrong words/payloads")
    return p


def start(args: argparse.Namespace) -> tuple[socket.socket, Served]:
    """The listening socket and what it serves, from the command line."""
    folder = Path(args.folder).resolve()
    manifest = load_manifest(folder)
    if args.max_frames is not None:
        manifest = replace(manifest, max_frames=min(manifest.max_frames, args.max_frames))
    if args.timeout <= 0:
        raise AgentError(f"--timeout must be positive, got {args.timeout}")
    token = read_token(args.token_file)
    sim_dir = sim_folder(folder, manifest, args.sim_dir).resolve()
    artefact = artefact_sha256(folder, manifest, args.backend, sim_dir)
    backend = make_backend(args.backend, folder, manifest, sim_dir)
    if args.fault:
        log.warning("fault injection %r: this agent sends wrong data on purpose", args.fault)
    if args.bind not in ("127.0.0.1", "::1", "localhost"):
        log.warning("listening on %s: the token guards access, nothing is encrypted", args.bind)
    try:
        server = socket.create_server((args.bind, args.port), backlog=MAX_CONNECTIONS)
    except OSError as err:
        why = os.strerror(err.errno) if err.errno else str(err)
        raise AgentError(f"cannot listen on {args.bind}:{args.port}: {why} (another agent "
                         "there? choose another --port)") from None
    return server, Served(args.backend, backend, manifest, artefact, token, args.timeout,
                          args.fault)


def main(argv: list[str] | None = None) -> int:
    """Run the agent until SIGTERM or SIGINT (0); 2 if it cannot start."""
    logging.basicConfig(level=logging.INFO, format="agent: %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    try:
        if args.backend == "rtlsim":  # this process's temporary files stay in the folder
            scratch = Path(args.folder).resolve() / "tmp"
            scratch.mkdir(exist_ok=True)
            tempfile.tempdir = str(scratch)
        server, srv = start(args)
    except (HardwareError, OSError) as err:
        sys.stderr.write(f"agent: {err}\n")
        return 2
    host, port = server.getsockname()[:2]
    sys.stdout.write(f"LISTENING {host} {port} {srv.backend_name} {srv.artefact}\n")
    sys.stdout.flush()
    log.info("serving %s (sha256 %s) on %s:%d", srv.backend_name, srv.artefact[:16], host, port)
    serve_until_stopped(server, srv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
