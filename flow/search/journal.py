"""The search's Optuna journal, checked before a search appends to it.

Optuna appends one JSON object per line. A crash or a full disk can leave the last line torn (no
newline, or not JSON); appending after it would damage the journal for every later run. So a
search first cuts a torn last line off (its bytes kept in `<journal>.bad`) and refuses a damaged
line anywhere else (a JournalError naming the line and how to recover), changing nothing then.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
from pathlib import Path

from flow.core.errors import JournalError

log = logging.getLogger(__name__)


def journal_lines(data: bytes) -> list[bytes]:
    """The journal's lines as Optuna reads them (split at b"\\n", newline kept)."""
    parts = data.split(b"\n")
    return [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _sound(line: bytes) -> bool:
    """A complete journal record: newline-terminated and a JSON object."""
    if not line.endswith(b"\n"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, deep nesting
        return False


def check_journal(path: Path) -> int:
    """Cut a torn last line off the journal at `path` (kept in `<path>.bad`, one warning);
    raise JournalError for a damaged line before it. Returns the number of bytes cut."""
    if not path.is_file():
        return 0
    lines = journal_lines(path.read_bytes())
    good = 0  # bytes of sound lines before the first damaged one
    for number, line in enumerate(lines, start=1):
        if _sound(line):
            good += len(line)
        elif number < len(lines):
            raise JournalError(_damaged(path, number, good))
        else:
            _cut_tail(path, good, line)
            return len(line)
    return 0


def open_journal(path: Path):
    """Optuna's storage on the journal at `path`, which it replays; JournalError naming the file
    if a record cannot be replayed (an unknown operation, missing fields)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    try:
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    except Exception as err:  # Optuna asserts on records it does not know
        p, why = shlex.quote(str(path)), (str(err).splitlines() or ["-"])[0]
        raise JournalError(f"{path}: the search journal holds a record Optuna cannot replay "
                           f"({type(err).__name__}: {why}); start the search over with "
                           f"`mv {p} {p}.old`, then run again") from None


def _damaged(path: Path, number: int, good: int) -> str:
    p = shlex.quote(str(path))
    return (f"{path}: line {number} of the search journal is damaged (not a JSON record); "
            f"start the search over with `mv {p} {p}.old`, or keep its first {number - 1} "
            f"lines (the trials after them are lost) with `truncate -s {good} {p}`, then run "
            f"again")


def _cut_tail(path: Path, good: int, tail: bytes) -> None:
    """Keep `tail` in `<path>.bad` (appended, synced), then cut the journal to `good` bytes."""
    bad = path.with_name(path.name + ".bad")
    with open(bad, "ab") as f:
        f.write(tail)
        f.flush()
        os.fsync(f.fileno())
    os.truncate(path, good)
    log.warning("%s: cut its torn last line (%d bytes, left by a crash or a full disk); the "
                "bytes are kept in %s", path, len(tail), bad)
