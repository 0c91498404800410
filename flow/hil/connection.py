"""One authenticated connection to a board agent (its protocol: hw_models/agent.py)."""

from __future__ import annotations

import hmac
import socket

import numpy as np
from pydantic import ValidationError

from flow.hil.deployment import parse_target
from flow.hil.types import CLIENT_MAX_MESSAGE, HilError, ResultHeader
from hw_models import agent
from hw_models.agent import Manifest, ProtocolError


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
