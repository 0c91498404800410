"""The run folder: marked as densiflow's, locked by one process, steps committed atomically.

Layout of `<out>/<name>/`:
- `.densiflow-run`: the mark (JSON). densiflow only ever writes or deletes inside a marked folder,
  and refuses an existing folder without it.
- `.lock`: held with flock by the one process working on the run (its pid inside).
- `recipe.yaml`: the recipe last asked for (what `densiflow simulate` and `importance` rebuild).
- `<nn>_<step>`: a symbolic link to `.steps/<nn>_<step>.<id>/`, the step's artefacts plus
  `result.json` (a `StepRecord`). A step is built in a fresh `.steps/` folder and the link is
  swapped atomically when it is complete, so a link always points at a finished step, the
  previous result is replaced only by a complete successor, and absolute paths inside FINN's
  files stay valid (the folder never moves).
- `summary.json`: written by the report step; `check_summary` tells whether it is current.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from flow.errors import ArtefactError, RunFolderError
from flow.io import atomic_write_json, file_sha256

MARK = ".densiflow-run"
MARK_FORMAT = 1
STEPS_DIR = ".steps"


class StepRecord(BaseModel):
    """What a finished step says about itself: identity, what it read, what it wrote."""

    model_config = ConfigDict(extra="forbid")

    step: str
    id: str  # unique per execution; later steps record the id they consumed
    inputs: str  # digest of the recipe sections the step reads
    upstream: str | None  # id of the previous step's record when this one ran
    seconds: float
    artefacts: dict[str, str]  # file path (relative to the step folder) -> sha256
    result: dict[str, Any]  # the step's typed result, dumped


def digest(data: Any) -> str:
    """A short stable hash of JSON-able data."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RunFolder:
    """One run folder: create or adopt (only if marked), lock, read and commit steps."""

    def __init__(self, path: Path):
        self.path = Path(path)

    # ------------------------------------------------------------------ identity and lock

    @classmethod
    def create_or_open(cls, path: Path, name: str) -> RunFolder:
        """The run folder at `path`, created and marked if absent; refused if not densiflow's."""
        path = Path(path)
        if path.exists() or path.is_symlink():
            folder = cls.open(path)
            if folder.mark().get("name") != name:
                raise RunFolderError(f"{path} belongs to run '{folder.mark().get('name')}', not "
                                     f"'{name}'; choose another --out or name")
            return folder
        path.mkdir(parents=True)
        atomic_write_json(path / MARK, {"format": MARK_FORMAT, "name": name, "redo_from": None})
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> RunFolder:
        """An existing run folder; RunFolderError unless it carries densiflow's mark."""
        path = Path(path)
        if not path.is_dir() or path.is_symlink():
            raise RunFolderError(f"{path} is not a folder")
        if not (path / MARK).is_file():
            raise RunFolderError(
                f"{path} exists but is not a densiflow run folder (no {MARK} mark); densiflow "
                "never writes into or deletes folders it did not create: choose another name or "
                "--out")
        folder = cls(path)
        folder.mark()  # readable?
        return folder

    def mark(self) -> dict:
        try:
            data = json.loads((self.path / MARK).read_text())
            if not isinstance(data, dict) or data.get("format") != MARK_FORMAT:
                raise ValueError("unknown format")
            return data
        except (OSError, ValueError) as err:
            raise RunFolderError(f"{self.path / MARK} is damaged ({err}); the folder cannot be "
                                 "used as a run folder") from None

    def set_redo_from(self, step: str | None) -> None:
        """Record that the steps from `step` on must be redone (None: nothing pending)."""
        atomic_write_json(self.path / MARK, {**self.mark(), "redo_from": step})

    @contextmanager
    def lock(self, shared: bool = False) -> Iterator[None]:
        """Hold the folder's lock (shared: readers such as the HIL agent, many at once, but no
        exclusive holder); a refused process gets RunFolderError naming the holder."""
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise RunFolderError(
                    f"{self.path} is in use by another densiflow process (pid {holder}); wait "
                    "for it to finish or stop it") from None
            if not shared:
                os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    # ------------------------------------------------------------------ steps

    def step_link(self, folder_name: str) -> Path:
        return self.path / folder_name

    def record(self, folder_name: str) -> StepRecord | None:
        """The finished step's record, None if the step never finished here."""
        path = self.step_link(folder_name) / "result.json"
        if not path.is_file():
            return None
        try:
            return StepRecord.model_validate_json(path.read_text())
        except (ValidationError, ValueError, OSError):
            raise ArtefactError(f"{path} is damaged; redo the step: densiflow run RECIPE "
                                f"--from {folder_name.split('_', 1)[1]}") from None

    def new_step_dir(self, folder_name: str) -> Path:
        """A fresh, empty folder to build a step in (committed later by `commit`)."""
        work = self.path / STEPS_DIR / f"{folder_name}.{uuid.uuid4().hex[:12]}"
        work.mkdir(parents=True)
        return work

    def commit(self, folder_name: str, work: Path, record: StepRecord) -> None:
        """Write the record, point the step's link at `work` atomically, drop the old folder."""
        record = record.model_copy(update={"artefacts": _hash_tree(work)})
        atomic_write_json(work / "result.json", record.model_dump(mode="json"))
        link = self.step_link(folder_name)
        old = link.resolve() if link.is_symlink() else None
        if link.exists() and not link.is_symlink():
            raise RunFolderError(f"{link} is not a step link made by densiflow; move it away")
        tmp = link.with_name(f".{folder_name}.link")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(work.relative_to(self.path))
        os.replace(tmp, link)
        if old is not None and old != work.resolve():
            shutil.rmtree(old, ignore_errors=True)

    def clean_uncommitted(self, step_folders: list[str]) -> None:
        """Remove step links that are not among `step_folders` (an older densiflow's steps) and
        step folders no link points at (left by an interrupted step)."""
        for link in self.path.iterdir():
            if link.is_symlink() and link.name not in step_folders:
                link.unlink()
        steps = self.path / STEPS_DIR
        if not steps.is_dir():
            return
        live = {p.resolve() for p in self.path.iterdir() if p.is_symlink()}
        for work in steps.iterdir():
            if work.resolve() not in live:
                shutil.rmtree(work, ignore_errors=True)

    def verify(self, folder_name: str) -> None:
        """ArtefactError naming the first file of a finished step that is missing or changed."""
        record = self.record(folder_name)
        for rel in record.artefacts if record else ():
            self.artefact(folder_name, rel, record)

    def artefact(self, folder_name: str, rel: str, record: StepRecord | None = None) -> Path:
        """Path of a step's artefact after checking it is the file the step wrote."""
        record = record or self.record(folder_name)
        step = folder_name.split("_", 1)[1]
        path = self.step_link(folder_name) / rel
        redo = f"redo it: densiflow run RECIPE --from {step}"
        if record is None or rel not in record.artefacts or not path.is_file():
            raise ArtefactError(f"{path} is missing; {redo}")
        if file_sha256(path) != record.artefacts[rel]:
            raise ArtefactError(f"{path} is damaged or was changed after step '{step}' wrote "
                                f"it (checksum mismatch); {redo}")
        return path


def _hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every file below root (result.json excluded), by relative path."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name != "result.json":
            out[path.relative_to(root).as_posix()] = file_sha256(path)
    return out
