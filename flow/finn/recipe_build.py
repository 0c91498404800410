"""The FINN build of a QONNX model under a recipe's `hardware` and `budget` sections: the one
place that turns a recipe into build_dataflow's arguments (the finn step, the search's
candidates, the methods' tables)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from flow.finn import FinnBuild
from flow.recipe.config import Recipe


def build_for_recipe(model, recipe: Recipe, work: Path, source: str,
                     verify_inputs: np.ndarray | None = None,
                     rtlsim_cache: Path | None = None) -> FinnBuild:
    """FINN's build of `model` (a QONNX ModelWrapper) for the recipe's board, target, clock,
    FIFO depth (or sizing), folding and board budget; checked against QONNX on `verify_inputs`
    if given."""
    from flow.finn import build_dataflow
    from hw_models.folding import Budget

    hw, fractions = recipe.hardware, recipe.budget.board_fraction
    budget = Budget(**{k: v for k, v in fractions.model_dump().items() if v is not None})
    return build_dataflow(model, hw.board, hw.target_fps, work, clock_mhz=hw.clock_mhz,
                          verify_frames=0, verify_inputs=verify_inputs, source=source,
                          fifo_depth=hw.fifo_depth, folding_method=hw.folding, budget=budget,
                          fifo_sizing=hw.fifo_sizing, rtlsim_cache=rtlsim_cache)
