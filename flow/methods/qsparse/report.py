"""qsparse's comparison: every pruning schedule at every sparsity, QAT fine-tuned, as the paper's
Table 4 with FINN's estimate of each variant; rank agreement of the A and W channel rankings.

Each variant's pruned float network (flow.methods.qsparse.schedule.run_schedule) gets the one QAT
procedure (flow.models.qat_model with the run's QAT settings) with the moving-average quantizers
at N_W / N_A, and is evaluated on the test split. Columns:
- N_W, N_A: weight and activation bits; s_W: share of the architecture's weights removed;
  s_A: share of the activation elements per frame removed (input + hidden outputs, flow.metrics);
- accuracy (test, %), its difference to the float baseline in points, weights / activations in
  Mbit at their bit-widths (flow.metrics), PD = accuracy % per Mbit of weights + activations;
- ours: lut/bram18/dsp and frames/s from FINN's estimate of the variant's exported network
  (flow.finn.build_dataflow on the recipe's hardware, folding and budget, as the finn step
  builds; column names end in _finn_estimate).
Rows "Float baseline" (32-bit, no FINN build) and "Dense W{N_W}A{N_A}" (no pruning) come first.

Rank agreement: at every mask step of the layerwise (A) runs, the layer's activation-l1 ranking
(μ_i, what it pruned by) against its weight-l1 ranking at that moment: Kendall's τ and the
Levenshtein distance (flow.importance.rank.compare).

Outputs: qsparse_table.csv / .json (rows, rank agreement, the done checks), qsparse_tradeoff.png.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from flow.importance.rank import compare
from flow.io import atomic_write_json, atomic_write_text, csv_text
from flow.methods.base import MethodContext
from flow.methods.params import QsparseParams
from flow.methods.qsparse.schedule import ScheduleResult
from flow.methods.variant_estimate import FINN_COLUMNS, finn_estimate
from flow.metrics import performance_density, plan_metrics
from flow.models import Net, qat_model
from flow.plan import CompressionPlan
from flow.train import accuracy
from hw_models.rules import input_bits

log = logging.getLogger(__name__)

LABELS = {"scratch": "From scratch", "one_shot": "One-shot", "stepwise": "Stepwise",
          "layerwise_a": "Layerwise (A)", "layerwise_w": "Layerwise (W)"}
COLUMNS = ["method", "schedule", "sparsity", "N_W", "N_A", "s_W", "s_A", "baseline_acc", "accuracy",
           "acc_diff_points", "weights_mbit", "activations_mbit", "pd_acc_per_mbit",
           *FINN_COLUMNS, "prune_s", "qat_s"]


def _activation_elements(ctx: MethodContext, plan: CompressionPlan | None) -> int:
    geo = ctx.arch.geometry(plan)
    return math.prod(ctx.arch.in_shape) + sum(g.out_elems for g in geo[:-1])


def variant_row(ctx: MethodContext, name: str, schedule: str, sparsity: float,
                plan: CompressionPlan, start: Net, float_acc: float,
                work: Path) -> dict:
    """QAT-fine-tune one variant from `start` (a float network at the plan's channels), measure
    it and estimate it with FINN: its table row."""
    t0 = time.perf_counter()
    model = qat_model(ctx.arch, start, plan, ctx.data, ctx.qat, name, start_plan=plan)
    qat_s = time.perf_counter() - t0
    tot = plan_metrics(ctx.arch, plan, model).totals
    acc = accuracy(model, ctx.data.x_test, ctx.data.y_test)
    lp = next(iter(plan.layers.values()))
    row = {
        "method": name, "schedule": schedule, "sparsity": sparsity, "N_W": lp.weight_bits,
        "N_A": lp.act_bits,
        "s_W": 1 - tot.params / tot.full_params,
        "s_A": 1 - _activation_elements(ctx, plan) / _activation_elements(ctx, None),
        "baseline_acc": 100 * float_acc, "accuracy": 100 * acc,
        "acc_diff_points": 100 * (acc - float_acc), "weights_mbit": tot.weight_mbit,
        "activations_mbit": tot.act_mbit,
        "pd_acc_per_mbit": performance_density(acc, tot.total_mbit), "qat_s": round(qat_s, 2),
    }
    row.update(finn_estimate(model, ctx, work))
    log.info("%s: test %.2f %%, %s", name, row["accuracy"],
             {k: row[k] for k in FINN_COLUMNS})
    return row


def rank_agreement(results: list[ScheduleResult]) -> list[dict]:
    """τ and Levenshtein distance of A vs W rankings at each layerwise (A) mask step."""
    return [{"sparsity": r.sparsity, "layer": e["layer"], "step": e["step"],
             **compare(e["act_l1"], e["weight_l1"])}
            for r in results if r.schedule == "layerwise_a" for e in r.events]


def claim_checks(rows: list[dict], sparsity: float = 0.75) -> dict:
    """The paper's claims at `sparsity`: layerwise (A) >= one-shot, >= stepwise, >= (W)."""
    acc = {r["schedule"]: r["accuracy"] for r in rows if r["sparsity"] == sparsity}
    if "layerwise_a" not in acc:
        return {}
    return {f"layerwise_a >= {other} at {round(sparsity * 100)}%": acc["layerwise_a"] >= acc[other]
            for other in ("one_shot", "stepwise", "layerwise_w") if other in acc}


def run_report(ctx: MethodContext, p: QsparseParams, results: list[ScheduleResult],
               out_dir: Path) -> dict:
    """Fine-tune, measure and FINN-estimate every variant; write Table 4 and the figure."""
    out_dir = Path(out_dir)
    float_acc = accuracy(ctx.float_model, ctx.data.x_test, ctx.data.y_test)
    full_params = sum(g.params for g in ctx.arch.geometry())
    rows = [{
        "method": "Float baseline", "schedule": "none", "sparsity": 0.0, "N_W": 32, "N_A": 32,
        "s_W": 0.0, "s_A": 0.0, "baseline_acc": 100 * float_acc, "accuracy": 100 * float_acc,
        "acc_diff_points": 0.0, "weights_mbit": full_params * 32 / 1e6,
        "activations_mbit": _activation_elements(ctx, None) * 32 / 1e6,
        "pd_acc_per_mbit": None, **dict.fromkeys(FINN_COLUMNS), "prune_s": None, "qat_s": None,
    }]
    rows[0]["pd_acc_per_mbit"] = performance_density(
        float_acc, rows[0]["weights_mbit"] + rows[0]["activations_mbit"])
    dense = ctx.arch.uniform_plan(p.weight_bits, p.act_bits, input_bits(ctx.data.input_bits),
                                  quantizer="moving_average")
    row = variant_row(ctx, f"Dense W{p.weight_bits}A{p.act_bits}", "none", 0.0, dense,
                         ctx.float_model, float_acc, out_dir / "finn" / "dense")
    rows.append({**row, "prune_s": None})
    for r in sorted(results, key=lambda r: (r.sparsity, list(LABELS).index(r.schedule))):
        name = f"{LABELS[r.schedule]} {round(r.sparsity * 100)}%"
        slug = f"{r.schedule}_{round(r.sparsity * 100)}"
        row = variant_row(ctx, name, r.schedule, r.sparsity, r.plan, r.model, float_acc,
                             out_dir / "finn" / slug)
        rows.append({**row, "prune_s": round(r.seconds, 2)})
    table = {"rows": rows, "chosen": f"{LABELS[p.schedule]} {round(p.sparsity * 100)}%",
             "finn_source": "FINN estimate (flow.finn.build_dataflow), recipe hardware",
             "rank_agreement": rank_agreement(results),
             "checks": {k: v for s in p.report_sparsities
                        for k, v in claim_checks(rows, s).items()}}
    atomic_write_json(out_dir / "qsparse_table.json", table)
    atomic_write_text(out_dir / "qsparse_table.csv", csv_text(rows, COLUMNS))
    plot_tradeoff(rows, out_dir / "qsparse_tradeoff.png", ctx.arch.name)
    return table


def plot_tradeoff(rows: list[dict], path: Path, arch: str) -> None:
    """Accuracy against PD per schedule (one marker a sparsity)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for schedule, label in LABELS.items():
        pts = [(r["pd_acc_per_mbit"], r["accuracy"]) for r in rows if r["schedule"] == schedule]
        if pts:
            ax.plot(*zip(*pts), "o-", label=label)
    for r in (r for r in rows if r["method"].startswith("Dense")):
        ax.plot(r["pd_acc_per_mbit"], r["accuracy"], "k*", markersize=12, label=r["method"])
    ax.set_xlabel("performance density (accuracy % per Mbit of weights + activations)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"qsparse schedules on {arch}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
