"""qsparse, from "Learning Low-Precision Structured Subnetworks Using Joint Layerwise Channel
Pruning and Uniform Quantization": the method's entry point. The pruning schedules are
`schedule`, the paper's Table 4 is `report`."""
from __future__ import annotations

import logging
from pathlib import Path

from flow.methods.base import MethodContext, MethodOutput
from flow.methods.params import QsparseParams
from flow.methods.qsparse.report import run_report
from flow.methods.qsparse.schedule import SCHEDULES, quant_start, run_schedule

log = logging.getLogger(__name__)


def make_plan(ctx: MethodContext, p: QsparseParams, out_dir: Path) -> MethodOutput:
    """The chosen schedule at `sparsity`; with report: true every schedule at every
    report_sparsities value, and Table 4 (flow.methods.qsparse.report)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [(p.schedule, p.sparsity)]
    if p.report:
        runs += [(s, f) for f in p.report_sparsities for s in SCHEDULES if (s, f) != runs[0]]
    results = [run_schedule(ctx, p, s, f) for s, f in runs]
    for r in results:
        log.info("qsparse %s at %.0f %%: kept %s in %.1f s", r.schedule, 100 * r.sparsity,
                 {n: len(lp.keep) for n, lp in r.plan.layers.items() if lp.keep}, r.seconds)
    chosen = results[0]
    if p.report:
        run_report(ctx, p, results, out_dir)
    return MethodOutput(chosen.plan, quant_start(ctx, chosen))
