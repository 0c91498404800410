"""The `search` method: the co-design search inside a run's plan step.

The study lives in the run's state folder (MethodContext.state_dir, kept when the step is
interrupted), so a re-run of `densiflow run` resumes it; the outcome, the fronts' plan files and
the HTML report land in the step folder. The chosen plan goes on through the run's qat, export,
finn and simulate steps.
"""
from __future__ import annotations

from pathlib import Path

from flow.core.errors import ConfigError
from flow.methods.base import MethodContext, MethodOutput
from flow.methods.params import SearchParams
from flow.search.runner import SearchInputs, search


def make_plan(ctx: MethodContext, params: SearchParams, out_dir: Path) -> MethodOutput:
    """Run (or resume) the search; its chosen plan (a BudgetError if none meets the budget)."""
    if ctx.recipe is None:
        raise ConfigError("method.name: 'search' needs the recipe's hardware and budget "
                          "sections; the plan step must pass MethodContext.recipe")
    inputs = SearchInputs(recipe=ctx.recipe, params=params, arch=ctx.arch, data=ctx.data,
                          float_model=ctx.float_model, min_bits=ctx.min_bits)
    state_dir = ctx.state_dir or Path(out_dir) / "state"
    outcome = search(inputs, state_dir, Path(out_dir), params.workers, params.storage)
    return MethodOutput(outcome.chosen_point.candidate.compression_plan())
