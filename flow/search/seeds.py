"""Seed points of the search: uniform plans, importance plans, and any other method's plan.

- uniform: every layer at one weight width (activations the nearest allowed width), all
  channels kept, for each allowed weight width;
- importance: channels pruned by the k·σ rule on their activation-l1 scores
  (flow.importance.pruning.structured_keep, k = 1 and 2) at 4 and 3 bits, per channel unit
  (flow.importance.groups: coupled layers scored together);
- `seeds:` in the search parameters: any other method of the recipe's union (aqp, a plan file,
  and the qsparse/DFQ methods once they exist), run as the plan step would run it; its plan is
  moved to the nearest point of the space (SearchSpace.choices).
"""
from __future__ import annotations

import logging
from pathlib import Path

from flow.importance.channel import activation_l1
from flow.importance.groups import prunable_units, unit_scores, with_unit_keep
from flow.importance.pruning import structured_keep
from flow.methods.base import MethodContext, get_method
from flow.methods.params import SearchParams
from flow.ml.train import TrainConfig
from flow.models.ptq import CALIB_SAMPLES
from flow.search.evaluate import SearchContext
from flow.search.space import Choices

log = logging.getLogger(__name__)

IMPORTANCE_K = (1.0, 2.0)
IMPORTANCE_BITS = (4, 3)


def uniform_seeds(ctx: SearchContext) -> list[tuple[str, Choices]]:
    """One uniform plan per allowed weight width."""
    space = ctx.space
    out = []
    for b in space.weight_bits:
        plan = ctx.arch.uniform_plan(b, b if b in space.act_bits else max(space.act_bits),
                                     space.input_bits)
        out.append((f"uniform W{b}", space.choices(plan)))
    return out


def importance_seeds(ctx: SearchContext) -> list[tuple[str, Choices]]:
    """Channels pruned by their activation-l1 scores (k·σ rule) at a few uniform widths."""
    calib_x, _ = ctx.data.subset("train", CALIB_SAMPLES, ctx.seed)
    scores, units = activation_l1(ctx.float_model, calib_x), prunable_units(ctx.arch)
    out = []
    for bits in IMPORTANCE_BITS:
        for k in IMPORTANCE_K:
            plan = ctx.arch.uniform_plan(bits, bits, ctx.space.input_bits)
            for unit in units:
                plan = with_unit_keep(plan, unit, structured_keep(unit_scores(unit, scores), k,
                                                                  ctx.space.min_keep))
            out.append((f"importance k={k:g} W{bits}", ctx.space.choices(plan)))
    return out


def method_seeds(ctx: SearchContext, params: SearchParams, min_bits: int,
                 out_dir: Path) -> list[tuple[str, Choices]]:
    """The plans of the methods listed in `seeds:`, each run in its own folder."""
    q = ctx.recipe.qat
    mctx = MethodContext(arch=ctx.arch, data=ctx.data, float_model=ctx.float_model,
                         qat=TrainConfig(q.epochs, q.lr, q.batch_size, q.weight_decay, ctx.seed),
                         min_bits=min_bits, seed=ctx.seed, recipe=ctx.recipe)
    out = []
    for i, p in enumerate(params.seeds):
        folder = out_dir / f"{i:02d}_{p.name}"
        folder.mkdir(parents=True, exist_ok=True)
        plan = get_method(p.name)(mctx, p, folder).plan
        ctx.arch.check_plan(plan)
        out.append((f"{p.name} seed {i}", ctx.space.choices(plan)))
        log.info("seed %d from method %s: %s", i, p.name, plan.digest())
    return out


def all_seeds(ctx: SearchContext, min_bits: int, out_dir: Path) -> list[tuple[str, Choices]]:
    """Every seed point the parameters ask for, each plan once."""
    params = ctx.params
    seeds = []
    if "uniform" in params.builtin_seeds:
        seeds += uniform_seeds(ctx)
    if "importance" in params.builtin_seeds:
        seeds += importance_seeds(ctx)
    seeds += method_seeds(ctx, params, min_bits, out_dir)
    unique: dict[str, tuple[str, Choices]] = {}
    for label, choices in seeds:
        unique.setdefault(ctx.space.plan(choices).digest(), (label, choices))
    return list(unique.values())
