"""Fixed baselines: one bit-width for every layer, optionally a fixed fraction of channels pruned."""
from __future__ import annotations

from pathlib import Path

from flow.errors import ConfigError
from flow.methods import MethodContext
from flow.plan import CompressionPlan

PARAMS = {"weight_bits", "act_bits", "input_bits"}


def make_plan(ctx: MethodContext, params: dict, out_dir: Path) -> CompressionPlan:
    """Uniform plan from `weight_bits`, `act_bits` and `input_bits` (default: the data's bits)."""
    unknown = set(params) - PARAMS
    if unknown:
        raise ConfigError(f"method: unknown keys {sorted(unknown)} for 'uniform'; allowed: {sorted(PARAMS)}")
    for key in ("weight_bits", "act_bits"):
        if key not in params:
            raise ConfigError(f"method.{key}: required for method 'uniform' (an integer 1..8)")
    input_bits = params.get("input_bits", min(ctx.data.input_bits, 8))
    return ctx.arch.uniform_plan(params["weight_bits"], params["act_bits"], input_bits)
