"""AQP, from "Adaptive Quantization and Pruning of Deep Neural Networks via Layer Importance
Estimation" (Shinde): the method's entry point. The per-layer search is `layer_search`, the fixed
baselines, table and figures are `report`."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from flow.core.io import atomic_write_json
from flow.importance.channel import activation_l1, weight_l1
from flow.importance.layer import layer_importance
from flow.methods.aqp.layer_search import MODES, result_dict, search
from flow.methods.aqp.report import run_report
from flow.methods.base import MethodContext, MethodOutput
from flow.methods.params import AqpParams

log = logging.getLogger(__name__)


def make_plan(ctx: MethodContext, p: AqpParams, out_dir: Path) -> MethodOutput:
    """Importance, the AQP search for `mode`, and (report: true) baselines, table and figures."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    importance = layer_importance(
        ctx.arch, ctx.float_model, ctx.data, weights=p.importance, high_bits=p.max_bits,
        low_bits=ctx.min_bits, min_act_bits=max(p.min_act_bits, ctx.min_bits), seed=ctx.seed,
    )
    importance.save(out_dir / "importance.json")
    calib_x, _ = ctx.data.subset("train", p.calib_samples, ctx.seed)
    channel_scores = {"act_l1": activation_l1(ctx.float_model, calib_x),
                      "weight_l1": weight_l1(ctx.float_model)}
    atomic_write_json(out_dir / "channel_importance.json", channel_scores)
    log.info("importance in %.1f s; order %s", time.perf_counter() - t0, importance.order())

    modes = list(MODES) if p.report else [p.mode]
    results = {m: search(ctx, importance, channel_scores["act_l1"],
                         p.model_copy(update={"mode": m})) for m in modes}
    chosen = results[p.mode]
    atomic_write_json(out_dir / "aqp_search.json", {
        "params": p.model_dump(),
        "chosen_mode": p.mode,
        "searches": {m: result_dict(r) for m, r in results.items()},
    })
    chosen.plan.save(out_dir / "plan.yaml")
    if p.report:
        run_report(ctx, p, {m: r.plan for m, r in results.items()}, channel_scores["act_l1"],
                   importance, out_dir)
    return MethodOutput(chosen.plan)
