"""qsparse's comparison: every pruning schedule at every sparsity, QAT fine-tuned, as the paper's
Table 4 with FINN's estimate of each variant; rank agreement of the A and W channel rankings.

Each variant's pruned float network (flow.methods.qsparse.schedule.run_schedule) gets the one QAT
procedure (flow.models.qat_model with the run's QAT settings) with the moving-average quantizers
at N_W / N_A, and is evaluated on the test split. Columns (QsparseRow):
- weight_bits, act_bits (N_W, N_A); weight_sparsity (s_W): share of the architecture's weights
  removed; act_sparsity (s_A): share of the activation elements per frame removed (input +
  hidden outputs, flow.ml.metrics);
- test_accuracy (a fraction), accuracy_diff_points to the float baseline, weight_mbit /
  act_mbit at their bit-widths (flow.ml.metrics), PD = accuracy % per Mbit of weights + activations;
- ours: lut/bram18/dsp and frames/s from FINN's estimate of the variant's exported network
  (flow.finn.build_dataflow on the recipe's hardware, folding and budget, as the finn step
  builds; field names end in _finn_estimate).
Rows "Float baseline" (32-bit, no FINN build) and "Dense W{N_W}A{N_A}" (no pruning) come first.

Rank agreement: at every mask step of the layerwise (A) runs, the layer's activation-l1 ranking
(μ_i, what it pruned by) against its weight-l1 ranking at that moment: Kendall's τ and the
Levenshtein distance (flow.importance.rank.compare).

Outputs: qsparse_table.json (QsparseTable: rows, rank agreement, the done checks),
qsparse_table.csv (the same rows), qsparse_tradeoff.png.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from flow.core.io import atomic_write_json, atomic_write_text
from flow.importance.rank import compare
from flow.methods.base import MethodContext
from flow.methods.params import QsparseParams
from flow.methods.qsparse.schedule import ScheduleResult
from flow.methods.variant_estimate import FinnEstimate, finn_estimate, rows_csv
from flow.ml.metrics import performance_density, plan_metrics
from flow.ml.train import accuracy
from flow.models import Net, qat_model
from flow.recipe.plan import CompressionPlan
from hw_models.rules import input_bits

log = logging.getLogger(__name__)

LABELS = {"scratch": "From scratch", "one_shot": "One-shot", "stepwise": "Stepwise",
          "layerwise_a": "Layerwise (A)", "layerwise_w": "Layerwise (W)"}
FROZEN = ConfigDict(frozen=True, extra="forbid")


class QsparseRow(BaseModel):
    """One variant of Table 4; accuracies and sparsities are fractions."""

    model_config = FROZEN

    method: str
    schedule: str  # a LABELS key, "none" for the float and dense rows
    sparsity: float  # the schedule's target
    weight_bits: int  # N_W
    act_bits: int  # N_A
    weight_sparsity: float  # s_W
    act_sparsity: float  # s_A
    float_test_accuracy: float
    test_accuracy: float
    accuracy_diff_points: float  # test accuracy - float baseline's, in points
    weight_mbit: float
    act_mbit: float
    performance_density_percent_per_mbit: float  # PD
    finn: FinnEstimate | None  # None for the float baseline
    prune_s: float | None
    qat_s: float | None


class RankAgreement(BaseModel):
    """A vs W channel rankings of one layer at one layerwise (A) mask step."""

    model_config = FROZEN

    sparsity: float
    layer: str  # coupled layers pruned by one mask as `a = b = c`
    step: int
    n: int  # channels
    tau: float  # Kendall's τ
    lev: int  # Levenshtein distance of the rank orders
    lev_norm: float  # lev / n


class QsparseTable(BaseModel):
    """qsparse_table.json: the rows, the chosen variant, rank agreement, the paper's claims."""

    model_config = FROZEN

    rows: list[QsparseRow]
    chosen: str
    finn_source: str
    rank_agreement: list[RankAgreement]
    checks: dict[str, bool]


def _activation_elements(ctx: MethodContext, plan: CompressionPlan | None) -> int:
    geo = ctx.arch.geometry(plan)
    return math.prod(ctx.arch.in_shape) + sum(g.out_elems for g in geo[:-1])


def variant_row(ctx: MethodContext, name: str, schedule: str, sparsity: float,
                plan: CompressionPlan, start: Net, float_acc: float, prune_s: float | None,
                work: Path) -> QsparseRow:
    """QAT-fine-tune one variant from `start` (a float network at the plan's channels), measure
    it and estimate it with FINN: its table row."""
    t0 = time.perf_counter()
    model = qat_model(ctx.arch, start, plan, ctx.data, ctx.qat, name, start_plan=plan)
    qat_s = time.perf_counter() - t0
    tot = plan_metrics(ctx.arch, plan, model).totals
    acc = accuracy(model, ctx.data.x_test, ctx.data.y_test)
    lp = next(iter(plan.layers.values()))
    row = QsparseRow(
        method=name, schedule=schedule, sparsity=sparsity, weight_bits=lp.weight_bits,
        act_bits=lp.act_bits, weight_sparsity=1 - tot.params / tot.full_params,
        act_sparsity=1 - _activation_elements(ctx, plan) / _activation_elements(ctx, None),
        float_test_accuracy=float_acc, test_accuracy=acc,
        accuracy_diff_points=100 * (acc - float_acc), weight_mbit=tot.weight_mbit,
        act_mbit=tot.act_mbit,
        performance_density_percent_per_mbit=performance_density(acc, tot.total_mbit),
        finn=finn_estimate(model, ctx, work), prune_s=prune_s, qat_s=round(qat_s, 2))
    log.info("%s: test %.2f %%, %s", name, 100 * acc, row.finn)
    return row


def rank_agreement(results: list[ScheduleResult]) -> list[RankAgreement]:
    """τ and Levenshtein distance of A vs W rankings at each layerwise (A) mask step."""
    return [RankAgreement(sparsity=r.sparsity, layer=e["unit"], step=e["step"],
                          **compare(e["act_l1"], e["weight_l1"]))
            for r in results if r.schedule == "layerwise_a" for e in r.events]


def claim_checks(rows: list[QsparseRow], sparsity: float = 0.75) -> dict[str, bool]:
    """The paper's claims at `sparsity`: layerwise (A) >= one-shot, >= stepwise, >= (W)."""
    acc = {r.schedule: r.test_accuracy for r in rows if r.sparsity == sparsity}
    if "layerwise_a" not in acc:
        return {}
    return {f"layerwise_a >= {other} at {round(sparsity * 100)}%": acc["layerwise_a"] >= acc[other]
            for other in ("one_shot", "stepwise", "layerwise_w") if other in acc}


def run_report(ctx: MethodContext, p: QsparseParams, results: list[ScheduleResult],
               out_dir: Path) -> QsparseTable:
    """Fine-tune, measure and FINN-estimate every variant; write Table 4 and the figure."""
    out_dir = Path(out_dir)
    float_acc = accuracy(ctx.float_model, ctx.data.x_test, ctx.data.y_test)
    full_params = sum(g.params for g in ctx.arch.geometry())
    weight_mbit = full_params * 32 / 1e6
    act_mbit = _activation_elements(ctx, None) * 32 / 1e6
    rows = [QsparseRow(
        method="Float baseline", schedule="none", sparsity=0.0, weight_bits=32, act_bits=32,
        weight_sparsity=0.0, act_sparsity=0.0, float_test_accuracy=float_acc,
        test_accuracy=float_acc, accuracy_diff_points=0.0, weight_mbit=weight_mbit,
        act_mbit=act_mbit,
        performance_density_percent_per_mbit=performance_density(float_acc,
                                                                  weight_mbit + act_mbit),
        finn=None, prune_s=None, qat_s=None)]
    dense = ctx.arch.uniform_plan(p.weight_bits, p.act_bits, input_bits(ctx.data.input_bits),
                                  quantizer="moving_average")
    rows.append(variant_row(ctx, f"Dense W{p.weight_bits}A{p.act_bits}", "none", 0.0, dense,
                            ctx.float_model, float_acc, None, out_dir / "finn" / "dense"))
    for r in sorted(results, key=lambda r: (r.sparsity, list(LABELS).index(r.schedule))):
        name = f"{LABELS[r.schedule]} {round(r.sparsity * 100)}%"
        slug = f"{r.schedule}_{round(r.sparsity * 100)}"
        rows.append(variant_row(ctx, name, r.schedule, r.sparsity, r.plan, r.model, float_acc,
                                round(r.seconds, 2), out_dir / "finn" / slug))
    table = QsparseTable(
        rows=rows, chosen=f"{LABELS[p.schedule]} {round(p.sparsity * 100)}%",
        finn_source="FINN estimate (flow.finn.build_dataflow), recipe hardware",
        rank_agreement=rank_agreement(results),
        checks={k: v for s in p.report_sparsities for k, v in claim_checks(rows, s).items()})
    atomic_write_json(out_dir / "qsparse_table.json", table.model_dump(mode="json"))
    atomic_write_text(out_dir / "qsparse_table.csv", rows_csv(rows))
    plot_tradeoff(rows, out_dir / "qsparse_tradeoff.png", ctx.arch.name)
    return table


def plot_tradeoff(rows: list[QsparseRow], path: Path, arch: str) -> None:
    """Accuracy against PD per schedule (one marker a sparsity)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for schedule, label in LABELS.items():
        pts = [(r.performance_density_percent_per_mbit, 100 * r.test_accuracy)
               for r in rows if r.schedule == schedule]
        if pts:
            ax.plot(*zip(*pts), "o-", label=label)
    for r in (r for r in rows if r.method.startswith("Dense")):
        ax.plot(r.performance_density_percent_per_mbit, 100 * r.test_accuracy, "k*",
                markersize=12, label=r.method)
    ax.set_xlabel("performance density (accuracy % per Mbit of weights + activations)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"qsparse schedules on {arch}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
