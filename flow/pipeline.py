"""`densiflow run`: the recipe as an ordered list of named steps over one run folder.

Each step reads what earlier steps saved (checked against the checksums they recorded) and
writes its artefacts and typed result into its own folder (flow.run.folder). A step is reused when
it finished with the same recipe sections and the same upstream step; otherwise it is redone,
and the steps after it with it. The previous result of a step stays until its successor is
complete. Everything a recipe can get wrong is checked before anything on disk changes.
"""
from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from flow.core.errors import ConfigError
from flow.core.io import atomic_write_text
from flow.methods.params import SearchParams
from flow.recipe.config import Recipe
from flow.run.folder import RunFolder, StepRecord, check_output_root
from flow.run.run import Run
from flow.run.table import (
    METHOD_STATE,
    STEP_NAMES,
    STEPS,
    StepSpec,
    step_folder,
    step_inputs,
    step_status,
)
from flow.search.study import check_start
from flow.steps import STEP_FUNCTIONS

log = logging.getLogger(__name__)


def preflight(run: Run) -> None:
    """Every check that needs the data or the architecture, before anything is written."""
    recipe, data = run.recipe, run.data
    data.check_splits()
    arch = run.arch
    arch.check_plan(arch.uniform_plan(4, 4, 4))  # the architecture itself is sound
    fixed = getattr(recipe.method, "fixed", None)
    if fixed is not None:
        try:
            fixed(arch.layer_names)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    frames = recipe.simulate.frames
    if recipe.simulate.enabled and frames is not None and frames > len(data.x_test):
        raise ConfigError(f"simulate.frames: {frames} is more than the test split holds; "
                          f"allowed: 1..{len(data.x_test)}")


def run_recipe(recipe: Recipe, out_root: Path = Path("build/out"), fresh: bool = False,
               from_step: str | None = None) -> dict[str, StepRecord]:
    """Run every step that is not current; returns {step: record}."""
    if from_step is not None and from_step not in STEP_NAMES:
        raise ConfigError(f"--from: unknown step '{from_step}'; steps are {', '.join(STEP_NAMES)}")
    out_root = Path(out_root)
    check_output_root(out_root)
    path = out_root / recipe.name
    if path.exists() or path.is_symlink():
        RunFolder.open(path)  # refuse a foreign folder before loading anything
    run = Run(recipe, RunFolder(path))
    preflight(run)
    run.folder = RunFolder.create_or_open(path, recipe.name)
    with run.folder.lock():
        run.folder.clean_uncommitted([step_folder(s) for s in STEP_NAMES])  # links checked first
        if fresh or from_step is not None:
            run.folder.set_redo_from(STEP_NAMES[0] if fresh else from_step)
        atomic_write_text(path / "recipe.yaml",
                          yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        _check_method_state(run)
        return _run_steps(run)


def _check_method_state(run: Run) -> None:
    """A search's journal or database, checked before the baseline trains when the plan step
    will run (flow.search.study.check_start)."""
    method = run.recipe.method
    if isinstance(method, SearchParams) and step_status(run.folder, run.recipe)["plan"] is None:
        check_start(method.storage, run.dir / METHOD_STATE, "method.storage")


def _run_steps(run: Run) -> dict[str, StepRecord]:
    status = step_status(run.folder, run.recipe)
    records: dict[str, StepRecord] = {}
    upstream: str | None = None
    for step in STEPS:
        record = status[step.name]
        if record is not None and (not records or upstream == record.upstream):
            run.folder.verify(step_folder(step.name))
            log.info("step %s: done earlier, reusing %s", step.name, run.step_dir(step.name))
        else:
            record = _execute(run, step, upstream)
            if run.folder.mark().get("redo_from") == step.name:
                run.folder.set_redo_from(None)
        records[step.name] = record
        upstream = record.id
    return records


def _execute(run: Run, step: StepSpec, upstream: str | None) -> StepRecord:
    folder_name = step_folder(step.name)
    work = run.folder.new_step_dir(folder_name)
    log.info("step %s ...", step.name)
    start = time.perf_counter()
    with step_log(work / "step.log"):
        result = STEP_FUNCTIONS[step.name](run, work)
    record = StepRecord(step=step.name, id=uuid.uuid4().hex, inputs=step_inputs(run.recipe, step),
                        upstream=upstream, seconds=round(time.perf_counter() - start, 2),
                        artefacts={}, result=result.model_dump(mode="json"))
    run.folder.commit(folder_name, work, record)
    log.info("step %s finished in %.1f s", step.name, record.seconds)
    return run.folder.record(folder_name)


class _StepLogHandler(logging.FileHandler):
    """A step's log file; a record it cannot write (a full disk) is dropped without a traceback:
    the step itself then fails with one line where it writes its artefacts."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        if not isinstance(sys.exc_info()[1], OSError):
            super().handleError(record)


@contextmanager
def step_log(path: Path) -> Iterator[None]:
    """Everything logged or warned during a step goes to its log file; the terminal shows
    densiflow's own messages only (see flow.cli's console filter)."""
    handler = _StepLogHandler(path)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        handler.close()
