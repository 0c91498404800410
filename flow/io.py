"""File I/O: atomic output (a reader never sees a half-written file), checked YAML input."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from flow.errors import ConfigError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to path via a temporary file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data) -> None:
    """Write JSON atomically, indented for people."""
    atomic_write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def read_yaml(path: str | Path, what: str, fmt: str = "YAML") -> Any:
    """Parse a YAML (or JSON) file; a ConfigError names `what` and the file if it is missing, a
    folder, not text, or not valid `fmt` (with the line, column and a caret)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give the {fmt} file inside it")
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not a text file; expected {fmt}") from None
    try:
        return yaml.safe_load(text)  # parsed from text, so that errors show the line and a caret
    except yaml.YAMLError as err:
        for mark in (getattr(err, "context_mark", None), getattr(err, "problem_mark", None)):
            if mark is not None:
                mark.name = str(path)
        raise ConfigError(f"{what} {path} is not valid {fmt}:\n{err}") from None


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def csv_text(rows: list[dict], columns: list[str]) -> str:
    """A table as CSV: the given columns, floats to 6 significant digits, None empty, a mapping
    as "key:value" pairs."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.6g}"
        if isinstance(v, dict):
            return " ".join(f"{k}:{x}" for k, x in v.items())
        return "" if v is None else v

    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: cell(v) for k, v in r.items() if k in columns})
    return buf.getvalue()
