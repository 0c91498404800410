"""AQP against fixed baselines: QAT fine-tuning of every variant, the paper's table and figures.

Variants, each fine-tuned with the run's QAT settings (ctx.qat: same epochs, data and seed) from
the float network's weights, then evaluated on the test split:
- "AQP (quant)", "AQP (prune)", "AQP (combined)": the three search modes;
- "Fixed W{b}A{b}": uniform b bits for weights and activations (activations >= min_act_bits);
- "Fixed prune {p}%": the weakest p % of channels (activation l1 on the calibration images) of
  every hidden layer removed (coupled layers of a graph network by one set: flow.importance.
  groups), at `baseline_prune_bits` (default 8) for weights and activations, the precision of
  the paper's fixed-pruning rows (pruning alone).

Size columns (flow.ml.metrics conventions): #parameters = weights of the deployed (channel-pruned)
network; avg bit-width b̄ = Σ b(l)·S(l)·N_P(l), S(l) counting the nonzero weights left after
channel and unstructured pruning; parameter size = b̄ · #parameters of the full architecture / 8
bytes, the paper's "Parameters Size (MB)" (= nonzero weights at their bit-widths, the size with
free sparse storage); the dense size (what FINN stores) and the CSR sparse size (nonzeros plus
column indices) are listed beside it, in Mbit. Accuracies are fractions; accuracy difference =
test accuracy − float baseline test accuracy, in points.

Outputs: aqp_table.json (AqpTable: rows, the done check, per-layer sizes, importance) and
aqp_table.csv (the same rows), aqp_tradeoff.png (accuracy vs
compression ratio 32/b̄, fixed vs adaptive, the chosen AQP plan starred), aqp_layers.png (the
chosen plan's bits and kept channels / weight density per layer).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from flow.core.io import atomic_write_json, atomic_write_text
from flow.importance.groups import coupled_labels, prunable_units, unit_scores, with_unit_keep
from flow.importance.layer import LayerImportance
from flow.importance.pruning import keep_strongest_fraction
from flow.methods.base import MethodContext
from flow.methods.params import AqpParams
from flow.methods.variant_estimate import rows_csv
from flow.ml.metrics import LayerMetrics, plan_metrics
from flow.ml.train import accuracy
from flow.models import qat_model
from flow.recipe.plan import CompressionPlan
from hw_models.rules import MAX_BITS, input_bits

log = logging.getLogger(__name__)

FROZEN = ConfigDict(frozen=True, extra="forbid")


class AqpRow(BaseModel):
    """One variant of AQP's table; accuracies are fractions of the test (val) split."""

    model_config = FROZEN

    method: str
    kind: Literal["float", "adaptive", "fixed"]
    stage: str
    model: str
    params_million: float  # weights of the deployed (channel-pruned) network, in 10^6
    nonzero_params: int
    avg_bits: float  # b̄
    param_size_mbyte: float  # the paper's "Parameters Size (MB)"
    weight_mbit: float  # dense, as FINN stores it
    weight_sparse_mbit: float | None  # CSR: nonzeros plus column indices
    compression_ratio: float  # 32 / b̄
    val_accuracy: float
    test_accuracy: float
    accuracy_diff_points: float  # test accuracy - float baseline's, in points
    qat_s: float | None  # QAT fine-tuning time


class AqpClaimCheck(BaseModel):
    """The paper's claim on the chosen AQP plan (claim_check)."""

    model_config = FROZEN

    chosen: str
    accuracy_diff_points: float
    avg_bits: float
    loss_ok: bool
    bits_ok: bool
    beats_smaller_fixed: dict[str, bool]
    passed: bool


class AqpImportanceRow(BaseModel):
    """One layer's importance: measures (normalised and raw), combined score, rank (1 = most)."""

    model_config = FROZEN

    layer: str
    normalised: dict[str, float]
    raw: dict[str, float]
    combined: float
    rank: int


class AqpTable(BaseModel):
    """aqp_table.json: the rows, the chosen plan's claim check, per-layer sizes, importance."""

    model_config = FROZEN

    rows: list[AqpRow]
    chosen: str
    check: AqpClaimCheck
    per_layer: list[LayerMetrics] | None  # the chosen plan's
    importance: list[AqpImportanceRow]


def importance_rows(importance: LayerImportance) -> list[AqpImportanceRow]:
    """LayerImportance.rows() with the measures grouped by kind."""
    return [AqpImportanceRow(layer=r["layer"], normalised={m: r[m] for m in importance.normalised},
                             raw={m: r[f"{m}_raw"] for m in importance.raw},
                             combined=r["combined"], rank=r["rank"])
            for r in importance.rows()]


def baseline_plans(ctx: MethodContext, p: AqpParams, channel_scores: dict[str, list[float]]
                   ) -> dict[str, CompressionPlan]:
    """The fixed uniform-bit and fixed channel-pruning plans, by row name."""
    in_bits = input_bits(ctx.data.input_bits)
    floor = max(p.min_act_bits, ctx.min_bits)
    plans = {}
    for b in p.baseline_bits:
        plans[f"Fixed W{b}A{max(b, floor)}"] = ctx.arch.uniform_plan(b, max(b, floor), in_bits)
    pb = p.baseline_prune_bits
    for frac in p.baseline_prune:
        plan = ctx.arch.uniform_plan(pb, max(pb, floor), in_bits)
        for unit in prunable_units(ctx.arch):  # coupled layers keep one set (groups.py)
            plan = with_unit_keep(plan, unit, keep_strongest_fraction(
                unit_scores(unit, channel_scores).tolist(), frac))
        plans[f"Fixed prune {round(frac * 100)}% (W{pb})"] = plan
    return plans


def run_report(ctx: MethodContext, p: AqpParams, aqp_plans: dict[str, CompressionPlan],
               channel_scores: dict[str, list[float]], importance: LayerImportance,
               out_dir: Path) -> AqpTable:
    """Fine-tune and evaluate every variant; write table, figures; return the table."""
    out_dir = Path(out_dir)
    x_test, y_test = ctx.data.x_test, ctx.data.y_test
    float_acc = accuracy(ctx.float_model, x_test, y_test)
    full_params = sum(g.params for g in ctx.arch.geometry())
    rows = [AqpRow(
        method="Float baseline", kind="float", stage="float training", model=ctx.arch.name,
        params_million=full_params / 1e6, nonzero_params=full_params, avg_bits=32.0,
        param_size_mbyte=full_params * 4 / 1e6, weight_mbit=full_params * 32 / 1e6,
        weight_sparse_mbit=None, compression_ratio=1.0,
        val_accuracy=accuracy(ctx.float_model, ctx.data.x_val, ctx.data.y_val),
        test_accuracy=float_acc, accuracy_diff_points=0.0, qat_s=None,
    )]
    variants = [(f"AQP ({m})", "adaptive", plan) for m, plan in aqp_plans.items()]
    baselines = baseline_plans(ctx, p, channel_scores)
    variants += [(name, "fixed", plan) for name, plan in baselines.items()]
    chosen_name = f"AQP ({p.mode})"
    stage = f"QAT fine-tune, {ctx.qat.epochs} epochs"
    per_layer = None
    for name, kind, plan in variants:
        t0 = time.perf_counter()
        model = qat_model(ctx.arch, ctx.float_model, plan, ctx.data, ctx.qat, name)
        seconds = time.perf_counter() - t0
        metrics = plan_metrics(ctx.arch, plan, model)
        tot = metrics.totals
        acc = accuracy(model, x_test, y_test)
        rows.append(AqpRow(
            method=name, kind=kind, stage=stage, model=ctx.arch.name,
            params_million=tot.params / 1e6, nonzero_params=tot.nonzero, avg_bits=tot.avg_bits,
            param_size_mbyte=tot.param_size_mbyte, weight_mbit=tot.weight_mbit,
            weight_sparse_mbit=tot.weight_mbit_sparse, compression_ratio=tot.compression_ratio,
            val_accuracy=accuracy(model, ctx.data.x_val, ctx.data.y_val), test_accuracy=acc,
            accuracy_diff_points=100 * (acc - float_acc), qat_s=round(seconds, 2),
        ))
        if name == chosen_name:
            per_layer = metrics.layers
        log.info("%s: b̄ %.3f, test %.2f%%", name, tot.avg_bits, 100 * acc)
    table = AqpTable(rows=rows, chosen=chosen_name, check=claim_check(rows, chosen_name),
                     per_layer=per_layer, importance=importance_rows(importance))
    atomic_write_json(out_dir / "aqp_table.json", table.model_dump(mode="json"))
    atomic_write_text(out_dir / "aqp_table.csv", rows_csv(rows))
    plot_tradeoff(rows, chosen_name, out_dir / "aqp_tradeoff.png", ctx.arch.name)
    if per_layer is not None:
        plot_layers(per_layer, aqp_plans[p.mode], importance, out_dir / "aqp_layers.png",
                    p.fixed(ctx.arch.layer_names), coupled_labels(ctx.arch))
    return table


def claim_check(rows: list[AqpRow], chosen: str, max_loss_points: float = 0.5,
                max_avg_bits: float = 3.0) -> AqpClaimCheck:
    """Does the chosen AQP plan lose <= max_loss_points, with b̄ <= max_avg_bits, and beat every
    fixed baseline whose b̄ is not larger (equal or smaller size) on test accuracy?"""
    row = next(r for r in rows if r.method == chosen)
    smaller = [r for r in rows if r.kind == "fixed" and r.avg_bits <= row.avg_bits + 1e-9]
    beaten = {r.method: row.test_accuracy > r.test_accuracy for r in smaller}
    loss_ok = row.accuracy_diff_points >= -max_loss_points
    bits_ok = row.avg_bits <= max_avg_bits
    return AqpClaimCheck(chosen=chosen, accuracy_diff_points=row.accuracy_diff_points,
                         avg_bits=row.avg_bits, loss_ok=loss_ok, bits_ok=bits_ok,
                         beats_smaller_fixed=beaten,
                         passed=loss_ok and bits_ok and all(beaten.values()))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_tradeoff(rows: list[AqpRow], chosen: str, path: Path, model_name: str) -> None:
    """Test accuracy vs compression ratio: fixed bits, fixed pruning, AQP variants, AQP starred.

    Left: every row; right: the same, zoomed on the band around the float baseline (points are
    named in the zoom when they fall inside it, else in the overview)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), dpi=110)
    float_row = next(r for r in rows if r.kind == "float")
    float_acc = 100 * float_row.test_accuracy
    star = next(r for r in rows if r.method == chosen)
    groups = [
        ("Fixed bits (WbAb)", lambda r: r.method.startswith("Fixed W"), "o", "tab:blue", "-"),
        ("Fixed channel pruning", lambda r: r.method.startswith("Fixed prune"), "s",
         "tab:orange", "-"),
        ("AQP variants", lambda r: r.kind == "adaptive" and r.method != chosen, "^",
         "tab:green", "none"),
    ]
    accs = [100 * r.test_accuracy for r in rows if r.kind != "float"]
    zoom_lo = max(min(accs), float_acc - 3.0) - 0.4
    zoom_hi = max(accs + [float_acc]) + 0.4
    for ax, zoom in zip(axes, (False, True)):
        ax.axhline(float_acc, color="grey", ls="--", lw=1,
                   label=f"float baseline ({float_acc:.2f} %)")
        ax.axhspan(float_acc - 0.5, float_acc, color="grey", alpha=0.08, label="within 0.5 points")
        for label, pick, marker, color, ls in groups:
            pts = sorted((r for r in rows if pick(r)), key=lambda r: r.compression_ratio)
            if not pts:
                continue
            xs, ys = [r.compression_ratio for r in pts], [100 * r.test_accuracy for r in pts]
            ax.plot(xs, ys, marker=marker, color=color, label=label, ls=ls, ms=8)
            for i, (r, x, y) in enumerate(zip(pts, xs, ys)):
                if (zoom_lo <= y <= zoom_hi) != zoom:  # each point named once: zoom or overview
                    continue
                name = r.method.replace("Fixed ", "").replace(" (W8)", "")
                ax.annotate(name, (x, y), textcoords="offset points", fontsize=8, color=color,
                            xytext=(6, 7 if (i % 2 == 0) == (color != "tab:orange") else -13))
        ax.plot(star.compression_ratio, 100 * star.test_accuracy, marker="*", ms=20,
                color="tab:red", ls="none",
                label=f"{chosen}: b̄ {star.avg_bits:.2f}, {100 * star.test_accuracy:.2f} %")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("compression ratio 32 / b̄ (log scale)")
        ax.set_ylabel("test accuracy after QAT fine-tuning (%)")
        ax.grid(True, which="both", alpha=0.3)
        if zoom:
            ax.set_ylim(zoom_lo, zoom_hi)
            ax.set_title("zoom: near the float baseline")
        else:
            ax.set_ylim(max(0.0, min(accs + [float_acc]) - 2), 100.5)
            ax.set_title(f"{model_name}: accuracy vs compression (QAT fine-tuned)")
            ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_layers(per_layer: list[LayerMetrics], plan: CompressionPlan, importance: LayerImportance,
                path: Path, fixed: list[str] | None = None,
                coupled: list[str] | None = None) -> None:
    """Chosen plan per layer: weight/activation bits; kept channels and nonzero-weight density.
    Module-path names are slanted; `coupled` (units of two or more layers keeping one channel
    set) is written under the kept-channel panel."""
    plt = _plt()
    names = [r.layer for r in per_layer]
    x = range(len(names))
    slant = {"rotation": 40, "ha": "right"} if max(map(len, names)) > 6 else {}
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 4 + 0.08 * max(map(len, names))
                                                        * bool(slant)), dpi=110)
    w = 0.38
    ax1.bar([i - w / 2 for i in x], [r.weight_bits for r in per_layer], w, label="weight bits")
    ax1.bar([i + w / 2 for i in x], [r.act_bits or 0 for r in per_layer], w, label="act bits")
    ax1.set_xticks(list(x), names, **slant)
    ax1.set_ylim(0, MAX_BITS + 0.5)
    ax1.set_ylabel("bits")
    ax1.set_title("bit-widths" + (f" (left fixed: {', '.join(fixed)})" if fixed else ""))
    ax1.legend(fontsize=8)
    ax2.bar(list(x), [r.out_ch for r in per_layer], color="tab:green", label="kept")
    ax2.bar(list(x), [r.full_out_ch - r.out_ch for r in per_layer],
            bottom=[r.out_ch for r in per_layer], color="lightgrey", label="removed")
    for i, r in enumerate(per_layer):
        ax2.annotate(f"{r.out_ch}/{r.full_out_ch}", (i, r.full_out_ch), ha="center",
                     va="bottom", fontsize=8)
    ax2.set_xticks(list(x), names, **slant)
    ax2.set_ylim(0, 1.25 * max(r.full_out_ch for r in per_layer))
    ax2.set_ylabel("output channels")
    ax2.set_title("kept channels")
    if coupled:
        ax2.set_xlabel("one channel set: " + "; ".join(coupled), fontsize=7, wrap=True)
    ax2.legend(fontsize=8, loc="upper left")
    density = [r.nonzero / r.params if r.params else 0 for r in per_layer]
    ax3.bar([i - w / 2 for i in x], density, w, color="tab:purple", label="nonzero weights (S)")
    ax3.bar([i + w / 2 for i in x], [importance.score(n) for n in names], w, color="tab:grey",
            label="importance")
    for i, n in enumerate(names):
        ax3.annotate(f"k={plan.layers[n].prune_k:g}", (i - w / 2, density[i]), ha="center",
                     va="bottom", fontsize=8)
    ax3.set_xticks(list(x), names, **slant)
    ax3.set_ylim(0, 1.25)
    ax3.set_title("weight density and layer importance")
    ax3.legend(fontsize=8, loc="upper right", ncols=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
