"""Fixed baselines: one bit-width for every layer."""
from __future__ import annotations

from pathlib import Path

from flow.methods.base import MethodContext, MethodOutput
from flow.methods.params import UniformParams
from hw_models.rules import input_bits


def make_plan(ctx: MethodContext, params: UniformParams, out_dir: Path) -> MethodOutput:
    """Uniform plan from `weight_bits`, `act_bits` and `input_bits` (default: the data's bits)."""
    in_bits = params.input_bits or input_bits(ctx.data.input_bits)
    return MethodOutput(ctx.arch.uniform_plan(params.weight_bits, params.act_bits, in_bits))
