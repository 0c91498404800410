"""File I/O: atomic output (a reader never sees a half-written file), checked YAML input."""
from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from flow.core.errors import ConfigError, FileSystemError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to path via a temporary file in the same folder and an atomic rename (a link
    at `path` is replaced, never written through); FileSystemError if the machine refuses."""
    path = Path(path)
    with refused_as_error(path, "write"):
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


_HINTS = {
    errno.ENOSPC: "free space on its disk and run the same command again",
    errno.EDQUOT: "free space (disk quota exceeded) and run the same command again",
    errno.EROFS: "the file system is read-only: choose a writable --out or copy the folder to "
                 "a writable place",
    errno.EACCES: "check its permissions or choose another --out",
    errno.EPERM: "check its permissions or choose another --out",
    errno.ELOOP: "it is a symbolic link and densiflow never writes through links: remove it",
}


def os_error_line(err: OSError, path: Path | str | None = None, doing: str = "use") -> str:
    """One line for an OSError: the path (`path`, else the error's), the machine's reason and
    what to do."""
    where = path if path is not None else err.filename
    hint = _HINTS.get(err.errno)
    return (f"cannot {doing}{'' if where is None else f' {where}'}: {err.strerror or err}"
            + (f"; {hint}" if hint else ""))


@contextmanager
def refused_as_error(path: Path | str, doing: str) -> Iterator[None]:
    """Turn the machine refusing a file operation (OSError) into a one-line FileSystemError."""
    try:
        yield
    except FileSystemError:
        raise
    except OSError as err:
        raise FileSystemError(os_error_line(err, path, doing)) from None


def remove_tree(path: Path) -> None:
    """Remove a folder densiflow made (absent: nothing); a link is removed itself, never
    followed, so nothing outside the folder is deleted."""
    path = Path(path)
    with refused_as_error(path, "remove"):
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)


def atomic_write_json(path: Path, data) -> None:
    """Write JSON atomically, indented for people."""
    atomic_write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice and reads 1e5 and 1.5e3 (strings in YAML
    1.1, which wants a dot and a signed exponent) as floats, as YAML 1.2 and JSON do."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, Hashable) and key in first:
                raise _DuplicateKey(key, line, first[key])
            first[key] = line
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)"
                                         r"[eE][-+]?[0-9]+$"),
                              list("-+.0123456789"))


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(f"line {line}: key {key!r} is given twice (first on line {first}); "
                         "keep one")


def read_yaml(path: str | Path, what: str, fmt: str = "YAML") -> Any:
    """Parse a YAML (or JSON) file; a ConfigError names `what` and the file if it is missing, a
    folder, not text, not valid `fmt` (with the line, column and a caret), nested too deep, or
    gives a mapping key twice (the line and the key)."""
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
        # parsed from text, so that errors show the line and a caret
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader
    except _DuplicateKey as err:
        raise ConfigError(f"{what} {path}: {err}") from None
    except RecursionError:
        raise ConfigError(f"{what} {path} nests lists or mappings too deep to read; "
                          "write it flatter") from None
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
