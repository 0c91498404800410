"""An agent on this machine: `densiflow agent` serving a run's deployment, and a local agent
process for tests and benchmarks."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from flow.hil.types import HilError
from hw_models import agent


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


def read_until(proc: subprocess.Popen, word: bytes, wait_s: float) -> bytes:
    """A process's stdout up to the first `word` in it (or what came within wait_s)."""
    buf, deadline = b"", time.monotonic() + wait_s
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while word not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
    return buf


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
    words = read_until(proc, b"\n", wait_s).decode(errors="replace").split()
    if len(words) != 5 or words[0] != "LISTENING":
        proc.kill()
        proc.wait(10)
        tail = log_path.read_text(errors="replace").splitlines()[-5:]
        raise HilError(f"the agent in {folder} did not start within {wait_s:g} s (exit "
                       f"{proc.returncode}): " + " | ".join(tail))
    return LocalAgent(proc, words[1], int(words[2]), words[4])
