"""DFQ's comparison: the paper's Table 1 (float32, uniform max / min candidate bits, DFQ) with
FINN's estimate of each variant, and Figure 2 (per-layer weight memory, float vs DFQ).

Rows, each but the float one QAT fine-tuned with the run's QAT settings (flow.models.qat_model)
and evaluated on the test split: "float32"; "uniform {b}-bit" at the largest and the smallest
candidate (2-bit by default, binary where the target allows 1-bit candidates), from the float
network; "DFQ (size)" and "DFQ (hardware)", each from its search's discrete network. Hidden
activations are at `act_bits` in every quantized row. Compression = 32 / b̄ over the weights
(flow.ml.metrics: b̄ = Σ b(l)·N_P(l)), as the paper's Table 1 counts it; accuracies are fractions,
their differences in points. Our columns: LUT, BRAM18,
DSP and frames/s from FINN's estimate of each exported variant (flow.finn.build_dataflow on the
recipe's hardware; names end in _finn_estimate), and lut_bram18_board_share = LUT/LUT(board) +
BRAM18/BRAM18(board).

Checks (the paper's claims): DFQ's compression lies between the uniform rows, >= 10x, at
<= 0.5 points below float; DFQ (hardware) uses a smaller lut_bram18_board_share than DFQ (size)
at an accuracy within 0.5 points.

Outputs: dfq_table.json (DfqTable: rows, searches with θ and their α traces, checks),
dfq_table.csv (the same rows) and dfq_layers.png (Figure 2).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from flow.core.io import atomic_write_json, atomic_write_text
from flow.methods.base import MethodContext
from flow.methods.dfq.bilevel import BilevelResult, discrete_weights
from flow.methods.params import DfqParams
from flow.methods.variant_estimate import FinnEstimate, finn_estimate, rows_csv
from flow.ml.metrics import plan_metrics
from flow.ml.train import accuracy
from flow.models import Net, qat_model
from flow.recipe.plan import CompressionPlan
from hw_models.boards import get_board
from hw_models.rules import input_bits

log = logging.getLogger(__name__)

FROZEN = ConfigDict(frozen=True, extra="forbid")


class DfqRow(BaseModel):
    """One row of Table 1; the test accuracy is a fraction."""

    model_config = FROZEN

    method: str
    weight_bits: int | dict[str, int]  # one width (float32) or per layer
    avg_bits: float  # b̄ over the weights
    compression_ratio: float  # 32 / b̄
    test_accuracy: float
    accuracy_diff_points: float  # test accuracy - float32's, in points
    weight_mbit: float
    finn: FinnEstimate | None  # None for float32
    lut_bram18_board_share: float | None  # LUT/LUT(board) + BRAM18/BRAM18(board)
    search_s: float | None
    qat_s: float | None


class DfqEpoch(BaseModel):
    """One epoch of a bilevel search's trace (flow.methods.dfq.bilevel.search)."""

    model_config = FROZEN

    epoch: int
    val_loss: float | None  # None in the warm-up (w only)
    lambda_on: float | None  # share of α steps with the size penalty on
    expected_cost: float
    probabilities: list[list[float]]  # per layer, per candidate


class DfqSearch(BaseModel):
    """One search of the table: θ, its time, its discrete plan and its trace."""

    model_config = FROZEN

    theta: float
    seconds: float
    plan: CompressionPlan
    trace: list[DfqEpoch]


class DfqTable(BaseModel):
    """dfq_table.json: the rows, the chosen search, every search, the paper's claims."""

    model_config = FROZEN

    rows: list[DfqRow]
    chosen: str
    act_bits: int
    finn_source: str
    searches: dict[str, DfqSearch]
    checks: dict[str, bool]


def variant_row(ctx: MethodContext, name: str, plan: CompressionPlan, start: Net,
                start_plan: CompressionPlan | None, float_acc: float, search_s: float | None,
                work: Path) -> DfqRow:
    """QAT-fine-tune one variant, measure it, estimate it with FINN: its table row."""
    t0 = time.perf_counter()
    model = qat_model(ctx.arch, start, plan, ctx.data, ctx.qat, name, start_plan=start_plan)
    qat_s = time.perf_counter() - t0
    tot = plan_metrics(ctx.arch, plan, model).totals
    acc = accuracy(model, ctx.data.x_test, ctx.data.y_test)
    board = get_board(ctx.recipe.hardware.board)
    finn = finn_estimate(model, ctx, work)
    log.info("%s: b̄ %.2f, test %.2f %%", name, tot.avg_bits, 100 * acc)
    return DfqRow(
        method=name, weight_bits={n: lp.weight_bits for n, lp in plan.layers.items()},
        avg_bits=tot.avg_bits, compression_ratio=tot.compression_ratio, test_accuracy=acc,
        accuracy_diff_points=100 * (acc - float_acc), weight_mbit=tot.weight_mbit, finn=finn,
        lut_bram18_board_share=(finn.lut_finn_estimate / board.lut
                                + finn.bram18_finn_estimate / board.bram18),
        search_s=search_s, qat_s=round(qat_s, 2))


def claim_checks(rows: dict[str, DfqRow], uniform_hi: str, uniform_lo: str,
                 chosen: str) -> dict[str, bool]:
    """The paper's claims on the rows by name (missing rows: no claim)."""
    f, hi, lo, d = rows["float32"], rows[uniform_hi], rows[uniform_lo], rows[chosen]
    checks = {
        "compression between uniform rows": hi.compression_ratio <= d.compression_ratio
        <= lo.compression_ratio,
        "compression >= 10x": d.compression_ratio >= 10,
        "accuracy >= float - 0.5 points": 100 * d.test_accuracy >= 100 * f.test_accuracy - 0.5,
    }
    if "DFQ (size)" in rows and "DFQ (hardware)" in rows:
        s, h = rows["DFQ (size)"], rows["DFQ (hardware)"]
        checks["hardware cost: fewer LUT+BRAM18 than size cost"] = \
            h.lut_bram18_board_share < s.lut_bram18_board_share
        checks["hardware vs size cost: accuracy within 0.5 points"] = \
            abs(100 * h.test_accuracy - 100 * s.test_accuracy) <= 0.5
    return checks


def run_report(ctx: MethodContext, p: DfqParams, searches: dict[str, BilevelResult],
               out_dir: Path) -> DfqTable:
    """Fine-tune, measure and FINN-estimate every row; write Table 1 and Figure 2."""
    out_dir = Path(out_dir)
    float_acc = accuracy(ctx.float_model, ctx.data.x_test, ctx.data.y_test)
    full = sum(g.params for g in ctx.arch.geometry())
    rows = {"float32": DfqRow(method="float32", weight_bits=32, avg_bits=32.0,
                              compression_ratio=1.0, test_accuracy=float_acc,
                              accuracy_diff_points=0.0, weight_mbit=32 * full / 1e6, finn=None,
                              lut_bram18_board_share=None, search_s=None, qat_s=None)}
    in_bits = input_bits(ctx.data.input_bits)
    for b in (p.candidates[-1], p.candidates[0]):
        name = f"uniform {b}-bit"
        rows[name] = variant_row(ctx, name, ctx.arch.uniform_plan(b, p.act_bits, in_bits),
                                 ctx.float_model, None, float_acc, None, out_dir / "finn" / f"w{b}")
    for cost, r in searches.items():
        name = f"DFQ ({cost})"
        rows[name] = variant_row(ctx, name, r.plan, discrete_weights(ctx, r.net), None, float_acc,
                                 round(r.seconds, 2), out_dir / "finn" / f"dfq_{cost}")
    chosen = f"DFQ ({p.cost})"
    table = DfqTable(
        rows=list(rows.values()), chosen=chosen, act_bits=p.act_bits,
        finn_source="FINN estimate (flow.finn.build_dataflow), recipe hardware",
        searches={c: DfqSearch(theta=r.theta, seconds=round(r.seconds, 2), plan=r.plan,
                               trace=[DfqEpoch(**e) for e in r.trace])
                  for c, r in searches.items()},
        checks=claim_checks(rows, f"uniform {p.candidates[-1]}-bit",
                            f"uniform {p.candidates[0]}-bit", chosen))
    atomic_write_json(out_dir / "dfq_table.json", table.model_dump(mode="json"))
    atomic_write_text(out_dir / "dfq_table.csv", rows_csv(table.rows))
    plot_layers(ctx, {c: r.plan for c, r in searches.items()}, out_dir / "dfq_layers.png")
    return table


def plot_layers(ctx: MethodContext, plans: dict[str, CompressionPlan], path: Path) -> None:
    """Figure 2: each layer's weight memory (kbit), float32 against every DFQ plan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    geo = ctx.arch.geometry()
    names = [g.name for g in geo]
    series = {"float32": [32 * g.params / 1e3 for g in geo]}
    series.update({f"DFQ ({c})": [plan.layers[g.name].weight_bits * g.params / 1e3 for g in geo]
                   for c, plan in plans.items()})
    fig, ax = plt.subplots(figsize=(6.4, 0.6 * len(names) * len(series) + 1))
    height = 0.8 / len(series)
    for k, (label, sizes) in enumerate(series.items()):
        ax.barh([i + k * height for i in range(len(names))], sizes, height, label=label)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(names))], names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("weight memory (kbit, log scale)")
    ax.set_title(f"per-layer weight memory, {ctx.arch.name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
