"""`densiflow simulate RUN`: simulate a finished FINN build again, beside the run's own steps.

The results land in `RUN/simulations/frames<N>_bp<P>/`; the recipe, the step folders and
summary.json are left alone, so the next `densiflow run` has nothing to redo.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from flow.core.io import atomic_write_json, refused_as_error, remove_tree
from flow.run.run import Run
from flow.sim.simulate_check import simulation_name
from flow.sim.verify import verify_run


def simulate_again(run: Run, frames: int | None, backpressure: float) -> tuple[Path, list[str]]:
    """Simulate `frames` test frames (all by default); the result folder and its summary lines."""
    n = frames or len(run.data.x_test)
    root = run.folder.own_dir("simulations")
    final = root / simulation_name(n, backpressure)
    with refused_as_error(root, "write in"):
        root.mkdir(exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        result = verify_run(run, work, n, backpressure, run.recipe.simulate.min_agreement)
        atomic_write_json(work / "result.json", result.model_dump(mode="json"))
        with refused_as_error(final, "replace"):
            if final.exists() or final.is_symlink():
                old = final.rename(root / f".{final.name}.old{os.getpid()}")
                remove_tree(old)  # a link is removed, never followed
            work.rename(final)
    finally:
        remove_tree(work)
    return final, result.lines()
