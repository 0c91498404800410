"""One candidate plan: short fine-tuning, size, the analytic screen and (when asked) FINN's
estimate, cached by plan digest.

Accuracy: the plan's Brevitas network from the float weights (post-training quantization on the
seeded calibration subset, flow.models.ptq_model), fine-tuned for `trial_epochs` epochs on the
train split (flow.ml.train.train, seeded, best validation epoch), measured on the validation split.

FINN: the fine-tuned network is exported to QONNX and built by flow.finn.build_dataflow with the
recipe's hardware section (its folding, within budget.board_fraction), as the run's finn step
does. The record (totals, frame rate, the cost model's error against FINN node by node and the
screen's error on the design) is cached in `<cache>/<key>.json`, key = the plan's digest, the
hardware section and (for the optimiser's folding) its calibration; FINN's files are removed after
reading.

Synthesis (recipe `hardware.synth: yosys`): the same build's RTL synthesised by Yosys for the
board's family (flow.sim.synth, nodes cached in the shared synthesis cache), its counts beside
FINN's estimate, cached in `<cache>/synth-<key>.json`. With synthesis asked for, the screen prices
designs with the Yosys calibration of the board's family (hw_models.cost.board_calibration).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from flow.core.io import atomic_write_text, remove_tree
from flow.methods.params import SearchParams
from flow.ml.data import Dataset
from flow.ml.metrics import performance_density, plan_metrics
from flow.ml.train import TrainConfig, accuracy, mean_loss, train
from flow.models import Architecture, Net, ptq_model
from flow.models.ptq import CALIB_SAMPLES
from flow.recipe.config import Recipe
from flow.recipe.plan import CompressionPlan
from flow.run.folder import digest
from flow.search.budget import Constraint, PlanFigures, check
from flow.search.hardware import HwFigures, screen
from flow.search.space import Choices, SearchSpace
from hw_models.boards import Board, get_board
from hw_models.cost import QUANTITIES, Calibration, LayerCost, board_calibration, load_calibration
from hw_models.resources import Resources, ResourceSource

log = logging.getLogger(__name__)


class PlanSize(BaseModel):
    """Memory of a plan (flow.ml.metrics conventions)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weight_mbit: float
    act_mbit: float
    total_mbit: float
    avg_bits: float
    params: int
    macs: int


class NodeErrorRow(BaseModel):
    """The cost model against FINN's estimate on one node of a FINN build (relative errors)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    node_type: str
    rel_error: dict[str, float]  # lut, bram18, uram, dsp, cycles
    live: list[str]  # quantities where the model or FINN is non-zero (the others are not errors)


class FinnEstimate(BaseModel):
    """FINN's estimate of one plan's build, and how the cost model and the screen compare."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    plan_digest: str
    folding: str
    figures: HwFigures
    hls_nodes: list[str]
    node_errors: list[NodeErrorRow]  # cost model (geometry only) vs FINN, same folding
    screen_error: dict[str, float]  # the screen's design totals vs FINN's: lut, bram18, dsp, cycles
    seconds: float


class SynthFigures(BaseModel):
    """Yosys' counts of one plan's FINN build (the build FINN's estimate is of) and FINN's
    estimate of the same build beside them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    plan_digest: str
    family: str
    yosys: str  # the Yosys package and version
    resources: Resources  # source: Yosys synthesis (LUT = logic + LUTRAM + SRL; FF)
    lut_logic: int
    lutram: int
    srl: int
    finn: Resources  # FINN's estimate of the same build
    figures: HwFigures  # Yosys' resources with the build's cycles and frame rate
    screen_error: dict[str, float]  # the screen's totals vs Yosys': lut, bram18, dsp
    seconds: float  # build + synthesis (cached nodes count as read)

    def ratio(self, resource: str) -> float | None:
        """Yosys / FINN's estimate for one resource (None where FINN estimates 0)."""
        finn = self.finn.get(resource)
        return self.resources.get(resource) / finn if finn else None


class Candidate(BaseModel):
    """Everything the search knows about one plan."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    digest: str
    plan: dict
    choices: dict[str, float]
    val_accuracy: float  # after the short fine-tuning
    val_loss: float
    size: PlanSize
    screen: HwFigures
    finn: FinnEstimate | None = None
    seconds: float

    @property
    def hardware(self) -> HwFigures:
        """FINN's figures where FINN estimated the plan, else the screen's."""
        return self.finn.figures if self.finn else self.screen

    @property
    def performance_density(self) -> float:
        return performance_density(self.val_accuracy, self.size.total_mbit)

    def figures(self, accuracy: float | None = None,
                hardware: HwFigures | None = None) -> PlanFigures:
        """The budget's view (accuracy: the short fine-tuning's unless given; hardware: FINN's
        or the screen's unless given, e.g. synthesised counts)."""
        return PlanFigures(accuracy=self.val_accuracy if accuracy is None else accuracy,
                           weight_mbit=self.size.weight_mbit, total_mbit=self.size.total_mbit,
                           hardware=hardware or self.hardware)

    def compression_plan(self) -> CompressionPlan:
        return CompressionPlan.from_dict(self.plan)


@dataclass
class SearchContext:
    """What evaluating a candidate needs (built once per process)."""

    recipe: Recipe
    params: SearchParams
    arch: Architecture
    data: Dataset
    float_model: Net
    float_val_accuracy: float
    space: SearchSpace
    finn_cache: Path
    synth_cache: Path | None = None  # Yosys' per-node cache (None: flow.sim.synth's default)

    @property
    def board(self) -> Board:
        return get_board(self.recipe.hardware.board)

    @property
    def clock_mhz(self) -> float:
        return self.recipe.hardware.clock_mhz or self.board.clock_mhz

    @property
    def synthesis(self) -> bool:
        """Does the recipe ask for Yosys' counts (hardware.synth: yosys)?"""
        return self.recipe.hardware.synth == "yosys"

    @property
    def calibration(self) -> Calibration:
        """The screen's cost model: Yosys-calibrated for the board's family when the recipe
        synthesises (and the family is calibrated), else FINN's estimate."""
        if self.synthesis:
            return board_calibration(self.board.family)
        return load_calibration(ResourceSource.FINN_ESTIMATE)

    @property
    def seed(self) -> int:
        return self.recipe.data.seed

    def constraints(self, figures: PlanFigures, after_qat: bool = False) -> list[Constraint]:
        """The budget on a plan's figures; before the full QAT with the search's accuracy slack
        (params.trial_slack_points)."""
        slack = 0.0 if after_qat else self.params.trial_slack_points
        return check(self.recipe.budget, self.board, self.float_val_accuracy, figures, slack)


def plan_size(arch: Architecture, plan: CompressionPlan) -> PlanSize:
    t = plan_metrics(arch, plan).totals
    return PlanSize(weight_mbit=t.weight_mbit, act_mbit=t.act_mbit, total_mbit=t.total_mbit,
                    avg_bits=t.avg_bits, params=t.params, macs=t.macs)


def screen_plan(ctx: SearchContext, plan: CompressionPlan,
                calibration: Calibration | None = None) -> HwFigures:
    """The analytic screen of a plan at the recipe's hardware target (the context's calibration
    unless given)."""
    hw = ctx.recipe.hardware
    return screen(ctx.arch, plan, ctx.data.input_bits, ctx.board, hw.target_fps, ctx.clock_mhz,
                  hw.fifo_depth, calibration or ctx.calibration)


def finetune(ctx: SearchContext, plan: CompressionPlan) -> Net:
    """The plan's network after post-training quantization and the short fine-tuning."""
    calib_x, _ = ctx.data.subset("train", CALIB_SAMPLES, ctx.seed)
    model = ptq_model(ctx.arch, ctx.float_model, plan, calib_x)
    epochs = ctx.params.trial_epochs
    if epochs:
        q = ctx.recipe.qat
        cfg = TrainConfig(epochs, q.lr, q.batch_size, q.weight_decay, ctx.seed)
        train(model, ctx.data.x_train, ctx.data.y_train, cfg, "trial", ctx.data.x_val,
              ctx.data.y_val)
    return model.eval()


def evaluate(ctx: SearchContext, plan: CompressionPlan, choices: Choices) -> tuple[Candidate, Net]:
    """Fine-tune, measure and screen one plan (no FINN); returns the candidate and its network."""
    t0 = time.perf_counter()
    model = finetune(ctx, plan)
    d = ctx.data
    cand = Candidate(
        digest=plan.digest(), plan=plan.to_dict(), choices=dict(choices),
        val_accuracy=accuracy(model, d.x_val, d.y_val), val_loss=mean_loss(model, d.x_val, d.y_val),
        size=plan_size(ctx.arch, plan), screen=screen_plan(ctx, plan),
        seconds=time.perf_counter() - t0)
    return cand, model


def finn_key(ctx: SearchContext, plan_digest: str) -> str:
    """Cache key: the plan and everything of the recipe FINN's build reads besides it (the
    folding optimiser's calibration included)."""
    r = ctx.recipe
    hardware = r.hardware.model_dump(mode="json", exclude={"synth"})
    if r.hardware.folding == "optimiser":
        hardware["calibration"] = board_calibration(ctx.board.family).digest()
    return digest({"plan": plan_digest, "hardware": hardware,
                   "fractions": r.budget.board_fraction.model_dump(mode="json"),
                   "input_bits": ctx.data.input_bits})


Cached = TypeVar("Cached", bound=BaseModel)


def _cached(path: Path, kind: type[Cached], work: Path,
            compute: Callable[[Path], Cached]) -> tuple[Cached, bool]:
    """`kind` read from `path`, else computed in the scratch folder `work` (removed afterwards)
    and saved to `path`; (value, cache hit)."""
    if path.is_file():
        return kind.model_validate_json(path.read_text()), True
    remove_tree(work)  # a link is removed, never followed
    try:
        got = compute(work)
    finally:
        remove_tree(work)
    atomic_write_text(path, got.model_dump_json(indent=1))
    return got, False


def finn_estimate(ctx: SearchContext, plan: CompressionPlan,
                  model: Net) -> tuple[FinnEstimate, bool]:
    """FINN's estimate of the plan's network (cached by plan digest); (estimate, cache hit)."""
    key = finn_key(ctx, plan.digest())
    return _cached(ctx.finn_cache / f"{key}.json", FinnEstimate,
                   ctx.finn_cache / "work" / f"{key}.{os.getpid()}",
                   lambda work: _build_and_compare(ctx, plan, model, key, work))


def _build(ctx: SearchContext, plan: CompressionPlan, model: Net, work: Path):
    """The plan's network exported to QONNX and built by FINN under the recipe, in work."""
    from flow.finn.recipe_build import build_for_recipe
    from flow.ml.export import export_model

    qonnx = export_model(model, ctx.data.in_shape, ctx.data.input_bits, work / "model.qonnx.onnx")
    return build_for_recipe(qonnx, ctx.recipe, work / "finn", f"plan {plan.digest()}")


def _build_figures(build, source: ResourceSource, resources: Resources) -> HwFigures:
    perf = build.performance
    return HwFigures(source=source, resources=resources, cycles=perf.steady_state_cycles,
                     fps=perf.fps, bottleneck=perf.bottleneck, latency_cycles=perf.latency_cycles)


def _build_and_compare(ctx: SearchContext, plan: CompressionPlan, model: Net, key: str,
                       work: Path) -> FinnEstimate:
    from qonnx.core.modelwrapper import ModelWrapper

    from flow.finn import finn_settings
    from hw_models.cost import compare_with_finn

    t0 = time.perf_counter()
    finn_cal = load_calibration(ResourceSource.FINN_ESTIMATE)  # the model of FINN's estimate
    build = _build(ctx, plan, model, work)
    with finn_settings(work / "finn"):
        report = compare_with_finn(ModelWrapper(str(build.path("dataflow_rtl"))), build.part,
                                   finn_cal, from_geometry=True)
    figures = _build_figures(build, build.source, build.totals)
    scr = screen_plan(ctx, plan, finn_cal)
    return FinnEstimate(
        key=key, plan_digest=plan.digest(), folding=ctx.recipe.hardware.folding, figures=figures,
        hls_nodes=build.hls_nodes,
        node_errors=[NodeErrorRow(name=n.name, node_type=n.node_type, rel_error=n.rel_error,
                                  live=[q for q in QUANTITIES if _value(n.model, q)
                                        or _value(n.reference, q)])
                     for n in report.nodes],
        screen_error=_design_error(scr, figures), seconds=time.perf_counter() - t0)


def synth_key(ctx: SearchContext, plan_digest: str) -> str:
    """Cache key of a plan's synthesis: its FINN build's key, the family and Yosys' version."""
    from hw_models.synth.yosys import yosys_version

    return digest({"finn": finn_key(ctx, plan_digest), "family": ctx.board.family,
                   "yosys": yosys_version()})


def synth_estimate(ctx: SearchContext, plan: CompressionPlan,
                   model: Net) -> tuple[SynthFigures, bool]:
    """Yosys' counts of the plan's FINN build (cached by plan digest); (figures, cache hit)."""
    key = synth_key(ctx, plan.digest())
    return _cached(ctx.finn_cache / f"synth-{key}.json", SynthFigures,
                   ctx.finn_cache / "work" / f"synth-{key}.{os.getpid()}",
                   lambda work: _synthesise(ctx, plan, model, key, work))


def _synthesise(ctx: SearchContext, plan: CompressionPlan, model: Net, key: str,
                work: Path) -> SynthFigures:
    from flow.sim.synth import synth_cache, synthesise_build

    t0 = time.perf_counter()
    build = _build(ctx, plan, model, work)
    cache = ctx.synth_cache or synth_cache(ctx.finn_cache.parent)  # the state folder's
    result = synthesise_build(build, work / "synth", cache)
    counts, res = result.report.totals, result.report.resources
    figures = _build_figures(build, ResourceSource.YOSYS, res)
    return SynthFigures(
        key=key, plan_digest=plan.digest(), family=result.report.family,
        yosys=result.report.yosys, resources=res, lut_logic=counts.lut_logic,
        lutram=counts.lutram, srl=counts.srl, finn=build.totals, figures=figures,
        screen_error=_design_error(screen_plan(ctx, plan), figures),
        seconds=time.perf_counter() - t0)


def _value(cost: LayerCost, quantity: str) -> float:
    return float(cost.cycles) if quantity == "cycles" else cost.resources.get(quantity)


def _design_error(model: HwFigures, ref: HwFigures) -> dict[str, float]:
    """Relative error of the screen's design figures against FINN's."""
    pairs = {r: (model.resources.get(r), ref.resources.get(r)) for r in ("lut", "bram18", "dsp")}
    pairs["cycles"] = (float(model.cycles), float(ref.cycles))
    return {k: abs(m - r) / r if r else float(m != 0) for k, (m, r) in pairs.items()}

