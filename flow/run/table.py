"""The run's steps as data: their order, folder names and the recipe sections each reads, and
whether a finished step is current for a recipe. The one place step names are declared; their
bodies are registered under these names in flow.steps."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from flow.core.io import file_sha256
from flow.recipe.config import Recipe
from flow.run.folder import RunFolder, StepRecord, digest


@dataclass(frozen=True)
class StepSpec:
    """A named step and the recipe sections it reads (dotted paths; "model_graph" stands for the
    network's graph as densiflow builds it, "method_inputs" for the files the method reads)."""

    name: str
    sections: tuple[str, ...]


STEPS: tuple[StepSpec, ...] = (
    StepSpec("baseline", ("data", "model", "model_graph", "train")),
    StepSpec("plan", ("method", "method_inputs", "qat", "hardware.target")),
    StepSpec("qat", ("qat",)),
    StepSpec("export", ()),
    StepSpec("finn", ("hardware.board", "hardware.target", "hardware.target_fps",
                      "hardware.clock_mhz", "hardware.fifo_depth", "hardware.folding",
                      "hardware.fifo_sizing", "budget.board_fraction")),
    StepSpec("simulate", ("simulate",)),
    StepSpec("synth", ("hardware.synth",)),
    StepSpec("deploy", ("deploy",)),
    StepSpec("report", ()),
)
STEP_NAMES: tuple[str, ...] = tuple(s.name for s in STEPS)
METHOD_STATE = "method_state"  # the plan step's state that outlives an interrupted step


def step_folder(step: str) -> str:
    """A step's folder name in the run folder, e.g. '05_finn'."""
    return f"{STEP_NAMES.index(step) + 1:02d}_{step}"


def step_inputs(recipe: Recipe, step: StepSpec) -> str:
    """Digest of what a step reads: recipe sections (dotted paths); for "method_inputs", the
    sections and files the recipe's method declares it reads."""
    data = recipe.model_dump(mode="json")
    picked = {}
    for path in step.sections:
        if path == "model_graph":
            # the traced graph, not the factory's file: an unrelated edit there redoes nothing,
            # a changed zoo architecture redoes the run
            picked[path] = asdict(recipe.model.architecture(recipe.data.in_shape))
        elif path == "method_inputs":
            picked.update({f: file_sha256(Path(f)) for f in recipe.method.input_files()})
            picked.update({p: _section(data, p) for p in recipe.method.reads})
        else:
            picked[path] = _section(data, path)
    return digest(picked)


def _section(data: dict, path: str):
    for key in path.split("."):
        data = data[key]
    return data


def step_status(folder: RunFolder, recipe: Recipe) -> dict[str, StepRecord | None]:
    """Each step's record if it is current for `recipe` (None: missing, stale or pending)."""
    redo = folder.mark().get("redo_from")
    redo_at = STEP_NAMES.index(redo) if redo in STEP_NAMES else len(STEPS)
    status: dict[str, StepRecord | None] = {}
    upstream: str | None = None
    for i, step in enumerate(STEPS):
        record = folder.record(step_folder(step.name))
        current = (record is not None and i < redo_at and record.upstream == upstream
                   and record.inputs == step_inputs(recipe, step)
                   and (i == 0 or status[STEPS[i - 1].name] is not None))
        status[step.name] = record if current else None
        upstream = record.id if current else None
    return status
