"""The run folder: marked as densiflow's, locked by one process, steps committed atomically.

Layout of `<out>/<name>/`:
- `.densiflow-run`: the mark (JSON). densiflow only ever writes or deletes inside a marked folder,
  and refuses an existing folder without it.
- `.lock`: held with flock by the one process working on the run (its pid inside), or shared by
  the `densiflow agent`s serving its deployment; never followed if it is a link.
- `recipe.yaml`: the recipe last asked for (what `densiflow simulate` and `importance` rebuild).
- `<nn>_<step>`: a symbolic link to `.steps/<nn>_<step>.<id>/`, the step's artefacts plus
  `result.json` (a `StepRecord`). A step is built in a fresh `.steps/` folder and the link is
  swapped atomically when it is complete, so a link always points at a finished step, the
  previous result is replaced only by a complete successor, and absolute paths inside FINN's
  files stay valid (the folder never moves). A link is followed only into this run's `.steps/`.
- `summary.json`: written by the report step; `check_summary` tells whether it is current.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from flow.core.errors import ArtefactError, FileSystemError, RunFolderError
from flow.core.io import atomic_write_json, file_sha256, refused_as_error

MARK = ".densiflow-run"
MARK_FORMAT = 1
STEPS_DIR = ".steps"
STEP_LINK = re.compile(r"\d\d_[a-z_]+")  # a step's link, e.g. 05_finn
STEP_WORK = re.compile(r"\d\d_[a-z_]+\.[0-9a-f]{12}")  # its folder in .steps/


def check_output_root(root: Path) -> None:
    """RunFolderError if the output root lies inside a run folder (its steps would be deleted
    as leftovers of that run, or it would delete that run's files)."""
    for parent in (Path(root).resolve(), *Path(root).resolve().parents):
        if (parent / MARK).is_file():
            raise RunFolderError(f"--out {root} lies inside the run folder {parent}; choose an "
                                 "output root outside every run folder")


def _open_lock(path: Path) -> int:
    """The lock file's descriptor: a regular file, opened without following a link."""
    with refused_as_error(path, "open the lock"):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise FileSystemError(f"{path} is not densiflow's lock file (a special file or a hard "
                              "link); remove it and run again")
    return fd


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



def run_command(run_dir: Path, from_step: str | None = None) -> str:
    """The command that finishes (or redoes from a step) the run in `run_dir`, where it is."""
    run_dir = Path(run_dir)
    cmd = f"densiflow run {run_dir / 'recipe.yaml'} --out {run_dir.parent}"
    return cmd if from_step is None else f"{cmd} --from {from_step}"


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
        check_output_root(path.parent)
        with refused_as_error(path, "create the run folder"):
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
        """Hold the folder's lock: exclusive (one process working on the run, its pid in the
        file) or shared (`densiflow agent` serving the run's deployment: no pid written). A
        conflicting holder gets RunFolderError saying who holds it."""
        path = self.path / ".lock"
        fd = _open_lock(path)
        try:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunFolderError(self._holder(fd, path)) from None
            if not shared:
                with refused_as_error(path, "write"):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _holder(self, fd: int, path: Path) -> str:
        """Why the lock is taken: an exclusive holder (its pid) or shared holders (agents)."""
        probe = _open_lock(path)
        try:
            fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return (f"{self.path} is in use by another densiflow process or served by a densiflow "
                    "agent; stop it (Ctrl-C in its terminal) and run the command again")
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            return (f"{self.path} is in use by another densiflow process (pid {holder}); wait "
                    "for it to finish or stop it")
        finally:
            os.close(probe)

    def own_dir(self, name: str) -> Path:
        """The path of a folder directly in the run folder (it may be absent); FileSystemError
        if a link or a file is in its place (densiflow never writes through a link out of the
        run folder)."""
        path = self.path / name
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise FileSystemError(f"{path} is a link or a file, not a folder densiflow made; "
                                  "move it away and run the command again")
        return path

    # ------------------------------------------------------------------ steps

    def step_link(self, folder_name: str) -> Path:
        return self.path / folder_name

    def step_target(self, folder_name: str) -> Path | None:
        """The `.steps/` folder a step's link points at (None: no link); FileSystemError if the
        link leads anywhere else (another run, a user's data), RunFolderError if a real file or
        folder is in the link's place. Checked before anything is read or removed through it."""
        link = self.step_link(folder_name)
        if not link.is_symlink():
            if link.exists():
                raise RunFolderError(f"{link} is not a step link made by densiflow; move it away")
            return None
        target = link.resolve()
        if target.parent != self.own_dir(STEPS_DIR).resolve():
            raise FileSystemError(
                f"{link} leads to {target}, outside this run's {STEPS_DIR}/ folder; densiflow "
                f"never reads or deletes through it: remove the link (rm {link}) and run again")
        return target

    def record(self, folder_name: str) -> StepRecord | None:
        """The finished step's record, None if the step never finished here."""
        target = self.step_target(folder_name)
        path = self.step_link(folder_name) / "result.json"
        if target is None or not path.is_file():
            return None
        try:
            return StepRecord.model_validate_json(path.read_text())
        except (ValidationError, ValueError, OSError):
            raise ArtefactError(f"{path} is damaged; redo the step: densiflow run RECIPE "
                                f"--from {folder_name.split('_', 1)[1]}") from None

    def new_step_dir(self, folder_name: str) -> Path:
        """A fresh, empty folder to build a step in (committed later by `commit`)."""
        steps = self.own_dir(STEPS_DIR)
        work = steps / f"{folder_name}.{uuid.uuid4().hex[:12]}"
        with refused_as_error(work, "create"):
            steps.mkdir(exist_ok=True)
            work.mkdir()
        return work

    def commit(self, folder_name: str, work: Path, record: StepRecord) -> None:
        """Write the record, point the step's link at `work` atomically, drop the old folder
        (only a folder in this run's `.steps/`; the link is checked first)."""
        old = self.step_target(folder_name)
        record = record.model_copy(update={"artefacts": _hash_tree(work)})
        atomic_write_json(work / "result.json", record.model_dump(mode="json"))
        link = self.step_link(folder_name)
        tmp = link.with_name(f".{folder_name}.link")
        with refused_as_error(link, "replace the step link"):
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(work.relative_to(self.path))
            os.replace(tmp, link)
        if old is not None and old != work.resolve():
            shutil.rmtree(old, ignore_errors=True)

    def clean_uncommitted(self, step_folders: list[str]) -> None:
        """Check every step link, then remove the step links that are not among `step_folders`
        (an older densiflow's steps) and the step folders no link points at (left by an
        interrupted step). Only densiflow's own names are touched; links are never followed."""
        links = [p for p in self.path.iterdir() if p.is_symlink() and STEP_LINK.fullmatch(p.name)]
        targets = {link.name: self.step_target(link.name) for link in links}
        for link in links:
            if link.name not in step_folders:
                link.unlink()
        live = {target for name, target in targets.items() if name in step_folders}
        steps = self.own_dir(STEPS_DIR)
        if not steps.is_dir():
            return
        for work in steps.iterdir():
            if (STEP_WORK.fullmatch(work.name) and work.is_dir() and not work.is_symlink()
                    and work.resolve() not in live):
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
