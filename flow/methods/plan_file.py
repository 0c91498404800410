"""A given plan (hand-written, or a point of a search's Pareto front), used as it is."""
from __future__ import annotations

from pathlib import Path

from flow.methods.base import MethodContext, MethodOutput
from flow.methods.params import PlanFileParams
from flow.recipe.plan import CompressionPlan


def make_plan(ctx: MethodContext, params: PlanFileParams, out_dir: Path) -> MethodOutput:
    """The plan in `params.path` (checked against the architecture by the plan step)."""
    return MethodOutput(CompressionPlan.load(params.path))
