"""Cache folders of the hardware models (Verilator builds, Yosys results), checked before use."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hw_models.errors import CacheError


def _named(path: Path, env_var: str) -> str:
    """How the message names the folder: by the variable when it set this path."""
    env = os.environ.get(env_var)
    if env and Path(env).absolute() == path.absolute():
        return f"${env_var} ({path})"
    return f"the cache folder {path}"


def usable_cache_dir(path: str | Path, env_var: str) -> Path:
    """The cache folder, created if missing and resolved; CacheError in one line if it is a
    file, a dangling link or cannot be written (the message names `env_var` when it set the
    path, and the fix)."""
    path = Path(path)
    where = _named(path, env_var)
    fix = f"point {env_var} at a writable folder (or unset it)"
    if path.is_symlink() and not path.exists():
        raise CacheError(f"{where} is a link to {os.readlink(path)}, which does not exist; {fix}")
    if path.exists() and not path.is_dir():
        raise CacheError(f"{where} is a file, not a folder; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CacheError(f"{where} cannot be used ({exc.strerror or exc}); {fix}") from None
    return path.resolve()
