"""DFQ, from "Differentiable Fine-grained Quantization for Deep Neural Network Compression": the
method's entry point. The bi-level search is `bilevel`, Table 1 and Figure 2 are `report`."""
from __future__ import annotations

import logging
from pathlib import Path

from flow.methods.base import MethodContext, MethodOutput
from flow.methods.dfq.bilevel import COSTS, discrete_weights, search
from flow.methods.dfq.report import run_report
from flow.methods.params import DfqParams
from flow.models import ptq_model
from flow.models.ptq import CALIB_SAMPLES

log = logging.getLogger(__name__)


def make_plan(ctx: MethodContext, p: DfqParams, out_dir: Path) -> MethodOutput:
    """The search with the recipe's cost; with report: true both costs, Table 1 and Figure 2."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    costs = [p.cost] + ([c for c in COSTS if c != p.cost] if p.report else [])
    results = {c: search(ctx, p, c) for c in costs}
    chosen = results[p.cost]
    for r in results.values():
        log.info("dfq %s: bits %s in %.1f s", r.cost,
                 {n: lp.weight_bits for n, lp in r.plan.layers.items()}, r.seconds)
    if p.report:
        run_report(ctx, p, results, out_dir)
    calib_x, _ = ctx.data.subset("train", CALIB_SAMPLES, ctx.seed)
    start = ptq_model(ctx.arch, discrete_weights(ctx, chosen.net), chosen.plan, calib_x)
    return MethodOutput(chosen.plan, start)
