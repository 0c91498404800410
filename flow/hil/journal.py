"""The HIL journal: one fsync'd line per verified batch, so that a killed run resumes with no
batch lost or counted twice; a torn tail is kept in a .bad file."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from pydantic import BaseModel, ValidationError

from flow.core.errors import JournalError
from flow.hil.types import BatchRecord, HilError, JournalHeader

log = logging.getLogger(__name__)


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
