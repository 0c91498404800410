"""What a person looks at for one run: summary.json (typed, versioned) and the terminal table."""
from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError
from rich.console import Console
from rich.table import Table

from flow.core.errors import ArtefactError, ConfigError, RunFolderError
from flow.core.io import atomic_write_json, atomic_write_text, file_sha256
from flow.finn import FinnBuild, LayerEstimate
from flow.finn.vivado import VivadoFigures, estimate_error
from flow.hil.types import HilResult
from flow.recipe.config import load_recipe
from flow.recipe.plan import CompressionPlan
from flow.run.folder import RunFolder, run_command
from flow.run.results import (
    BaselineResult,
    DeployStepResult,
    PlanResult,
    QatResult,
    RtlVerification,
    SimulateResult,
    SynthStepResult,
)
from flow.run.run import Run
from flow.run.table import STEP_NAMES, step_status
from flow.sim.synth import SynthResult
from hw_models.fit import fit as resource_fit
from hw_models.resources import BUDGETED, Resources, ResourceSource

SCHEMA_VERSION = 2  # 2: typed plan, layer rows and deployment
SUMMARY_FILE = "summary.json"


class AccuracyByStage(BaseModel):
    """Test accuracy at each stage of the flow, in [0, 1]."""

    float_test: float  # the trained float network
    qat_test: float  # the plan's network after the qat step's fine-tuning (what is exported)
    rtl_test: float | None = None  # the simulated RTL (None: not simulated)


class Memory(BaseModel):
    weight_mbit: float
    act_mbit: float
    total_mbit: float
    avg_bits: float
    params: int


class FoldingSummary(BaseModel):
    """The folding optimiser against FINN's SetFolding at the same target (FINN's estimate of
    both), the resource-bound ceiling, and the optimiser's own cost-model view."""

    setfolding_fps: float
    setfolding_resources: Resources
    ceiling_fps: float
    fraction_of_bound: float  # fps / min(target, ceiling)
    binding: str
    cost_model_resources: Resources  # includes LUTRAM weights, which FINN counts as 0 LUT


class SynthSummary(BaseModel):
    """Yosys' post-synthesis counts of the whole design, beside FINN's estimate."""

    family: str
    resources: Resources
    lut_logic: int
    lutram: int
    srl: int
    ratio_to_finn: dict[str, float | None]  # per resource, Yosys / FINN (None: FINN says 0)
    line: str  # the terminal line


class FifoSizingSummary(BaseModel):
    """FIFO depths sized by simulation: what it saved (FINN's estimate of the FIFOs)."""

    lut_saved: float
    bram18_saved: float
    cycles_per_frame_deep: float
    cycles_per_frame_sized: float


class VivadoSummary(BaseModel):
    """Vivado's post-route utilisation (the reference where it exists) and the error of the other
    sources against it per resource: (other - Vivado) / Vivado, None where Vivado counts 0."""

    resources: Resources
    wns_ns: float | None
    timing_met: bool | None
    finn_error: dict[str, float | None]
    yosys_error: dict[str, float | None] | None  # None: not synthesised by Yosys


class HardwareSummary(BaseModel):
    # the source of `resources` and of the fit: Vivado where the bitstream was built, else Yosys
    # synthesis where it ran, else FINN's estimate
    resource_source: ResourceSource
    resources: Resources
    finn_estimate: Resources
    synthesis: SynthSummary | None
    vivado: VivadoSummary | None = None
    folding_report: FoldingSummary | None  # None: FINN's SetFolding was used
    fifo_sizing: FifoSizingSummary | None  # None: fixed FIFO depths
    fits: bool
    over: list[str]
    fps: float
    latency_us: float
    steady_state_cycles: int
    clock_mhz: float
    target_fps: float
    target_met: bool
    hls_nodes: list[str]


class HilSummary(BaseModel):
    """Hardware-in-the-loop validation of the whole test split (densiflow hil)."""

    target: str
    backend: str
    frames: int
    bit_exact: bool
    mismatches: int
    output_words: int
    accuracy: float | None
    agreement_with_reference: float | None
    wall_fps: float
    device_fps: float
    simulated_fps: float | None


def hil_summary(result: HilResult) -> HilSummary:
    """The summary's view of a flow.hil.types.HilResult."""
    fields = {k: getattr(result, k) for k in HilSummary.model_fields if k != "mismatches"}
    return HilSummary(**fields, mismatches=result.mismatches + result.probe_mismatches)


class StepSummary(BaseModel):
    id: str
    seconds: float


class LayerRow(BaseModel):
    """One layer of the plan with the resources and cycles of its HW nodes (None: no nodes)."""

    model_config = ConfigDict(extra="forbid")

    layer: str
    weight_bits: int
    act_bits: int | None  # None: the classifier, not requantized
    channels: str  # "kept/full" output channels
    weight_mbit: float
    act_mbit: float
    nodes: list[str]  # the FINN nodes counted for the layer
    lut: float | None = None
    bram18: float | None = None
    uram: float | None = None
    dsp: float | None = None
    cycles: int | None = None  # the slowest node's cycles per frame (FINN estimate)


class DeploymentSummary(BaseModel):
    """Where the deployment folder is, and whether it holds a bitstream."""

    model_config = ConfigDict(extra="forbid")

    folder: str
    bitstream: bool
    missing: str | None  # what stops the bitstream build (None: built)


class Summary(BaseModel):
    """Every figure of one run; `steps` ties it to the step results it was made from."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    run: str
    dataset: str
    arch: str
    method: str
    board: str
    target: str
    accuracy: AccuracyByStage
    accuracy_drop_points: float  # float_test - qat_test, in points
    memory: Memory
    performance_density: float  # qat_test accuracy in % per Mbit of weights + activations
    hardware: HardwareSummary
    simulation: RtlVerification | None  # None: skipped
    simulation_skipped: str | None
    deployment: DeploymentSummary | None  # None: the deploy step was skipped
    hil: HilSummary | None = None  # set by `densiflow hil`
    plan: CompressionPlan
    layers: list[LayerRow]
    steps: dict[str, StepSummary]


def build_summary(run: Run) -> Summary:
    """The summary of a run whose steps up to the report have finished."""
    recipe = run.recipe
    base = run.result("baseline", BaselineResult)
    qat = run.result("qat", QatResult)
    finn = run.finn_build()
    sim = run.result("simulate", SimulateResult)
    t = qat.metrics.totals
    val = sim.validation
    deployed = run.result("deploy", DeployStepResult)
    synth = run.result("synth", SynthStepResult).result
    return Summary(
        run=recipe.name, dataset=recipe.data.dataset, arch=recipe.model.name,
        method=recipe.method.name, board=recipe.hardware.board, target=recipe.hardware.target,
        accuracy=AccuracyByStage(float_test=base.float_test_accuracy,
                                 qat_test=qat.qat_test_accuracy,
                                 rtl_test=val.rtl_test_accuracy if val else None),
        accuracy_drop_points=100 * (base.float_test_accuracy - qat.qat_test_accuracy),
        memory=Memory(weight_mbit=t.weight_mbit, act_mbit=t.act_mbit, total_mbit=t.total_mbit,
                      avg_bits=t.avg_bits, params=t.params),
        performance_density=qat.performance_density,
        hardware=_hardware(finn, recipe.hardware.target_fps, synth,
                           None if deployed.manifest is None else deployed.manifest.vivado),
        simulation=val, simulation_skipped=sim.skipped,
        deployment=None if deployed.manifest is None else DeploymentSummary(
            folder=str(run.step_dir("deploy") / "deployment"), bitstream=deployed.bitstream,
            missing=deployed.manifest.missing),
        hil=_hil(run),
        plan=run.result("plan", PlanResult).plan,
        layers=layer_table_rows(qat, finn, synth),
        steps={s: StepSummary(id=run.record(s).id, seconds=run.record(s).seconds)
               for s in STEP_NAMES[:-1]},
    )


def _hil(run: Run) -> HilSummary | None:
    from flow.hil.wiring import saved_result

    result = saved_result(run)
    return None if result is None else hil_summary(result)


def _synthesis(result: SynthResult) -> SynthSummary:
    from flow.sim.synth import summary_line

    c = result.report.totals
    return SynthSummary(family=result.report.family, resources=result.report.resources,
                        lut_logic=c.lut_logic, lutram=c.lutram, srl=c.srl,
                        ratio_to_finn={r.resource: r.ratio for r in result.comparison.totals},
                        line=summary_line(result))


def vivado_summary(vivado: VivadoFigures, synth: SynthResult | None) -> VivadoSummary:
    """Vivado's counts, and FINN's and Yosys' error against them."""
    return VivadoSummary(
        resources=vivado.resources, wns_ns=vivado.wns_ns, timing_met=vivado.timing_met,
        finn_error=vivado.estimate_error,
        yosys_error=None if synth is None else estimate_error(synth.report.resources,
                                                              vivado.resources))


def vivado_line(v: VivadoSummary) -> str:
    """e.g. 'Vivado post-route: LUT 1200, ...; error vs Vivado: FINN estimate LUT -12 %, ...'."""
    def errors(source: str, err: dict[str, float | None]) -> str:
        return f"{source} " + ", ".join(
            f"{r.upper()} {'-' if e is None else f'{100 * e:+.0f} %'}" for r, e in err.items())

    counts = ", ".join(f"{r.upper()} {v.resources.get(r):,.0f}" for r in BUDGETED)
    if v.timing_met is None:
        timing = "timing not reported"
    else:
        timing = "timing met" if v.timing_met else f"timing MISSED (WNS {v.wns_ns} ns)"
    parts = [errors("FINN estimate", v.finn_error)]
    if v.yosys_error is not None:
        parts.append(errors("Yosys synthesis", v.yosys_error))
    return f"Vivado post-route: {counts}, {timing}; error vs Vivado: {'; '.join(parts)}"


def _hardware(finn: FinnBuild, target_fps: float, synth: SynthResult | None,
              vivado: VivadoFigures | None = None) -> HardwareSummary:
    """Hardware figures of a run; resources and board fit from the best source there is."""
    perf, rep = finn.performance, finn.folding_report
    folding = None if rep is None else FoldingSummary(
        setfolding_fps=rep.setfolding.fps, setfolding_resources=rep.setfolding.resources,
        ceiling_fps=rep.ceiling.fps, fraction_of_bound=rep.fraction_of_bound,
        binding=rep.binding, cost_model_resources=rep.cost_model.resources)
    if vivado is not None:
        resources = vivado.resources
        fit = resource_fit(resources, finn.board, ResourceSource.VIVADO)
    elif synth is not None:
        resources, fit = synth.report.resources, synth.fit
    else:
        resources, fit = finn.totals, finn.fit
    return HardwareSummary(
        resource_source=fit.source, resources=resources,
        finn_estimate=finn.totals, synthesis=None if synth is None else _synthesis(synth),
        vivado=None if vivado is None else vivado_summary(vivado, synth),
        folding_report=folding, fits=fit.fits, over=fit.over,
        fifo_sizing=None if finn.fifo_sizing is None else FifoSizingSummary(
            lut_saved=finn.fifo_sizing.lut_saved, bram18_saved=finn.fifo_sizing.bram18_saved,
            cycles_per_frame_deep=finn.fifo_sizing.cycles_per_frame_deep,
            cycles_per_frame_sized=(finn.fifo_sizing.cycles_per_frame_verified
                                    or finn.fifo_sizing.cycles_per_frame_sized)),
        fps=perf.fps, latency_us=perf.latency_us, steady_state_cycles=perf.steady_state_cycles,
        clock_mhz=finn.clock_mhz, target_fps=target_fps, target_met=perf.fps >= target_fps,
        hls_nodes=finn.hls_nodes,
    )


def _origin_layer(row: LayerEstimate, layer_names: list[str]) -> str | None:
    """The plan layer named in a node's QONNX origin ("Conv_5 (layer2.0.conv1)"), if any."""
    if row.origin is None or not row.origin.endswith(")") or " (" not in row.origin:
        return None
    name = row.origin.rsplit(" (", 1)[1][:-1]
    return name if name in layer_names else None


def group_hw_layers(finn_layers: list[LayerEstimate],
                    layer_names: list[str]) -> dict[str, list[LayerEstimate]]:
    """Attribute FINN's HW nodes to plan layers.

    A node whose QONNX origin names a plan layer (its MVAU/VVAU, sliding window, padding and
    thresholds) belongs to it; every other node (FIFOs, width converters, pools, forks and adds)
    to the next node's layer in graph order, and the nodes after the last one to the last layer.
    Returns {} where the number of compute nodes differs from the number of layers or a compute
    node has no layer (a foreign model).
    """
    compute = [r for r in finn_layers if r.op_type.startswith(("MVAU", "VVAU"))]
    if len(compute) != len(layer_names) or any(_origin_layer(r, layer_names) is None
                                                for r in compute):
        return {}
    groups: dict[str, list[LayerEstimate]] = {name: [] for name in layer_names}
    pending: list[LayerEstimate] = []
    for row in finn_layers:
        layer = _origin_layer(row, layer_names)
        if layer is None:
            pending.append(row)
            continue
        groups[layer] += [*pending, row]
        pending = []
    groups[layer_names[-1]] += pending
    return groups


def layer_table_rows(qat: QatResult, finn: FinnBuild,
                     synth: SynthResult | None = None) -> list[LayerRow]:
    """Per-layer rows joining plan metrics with resources summed over the layer's nodes: Yosys'
    counts where synthesised, else FINN's estimate (cycles: FINN's estimate)."""
    metrics = qat.metrics.layers
    groups = group_hw_layers(finn.layers, [m.layer for m in metrics])
    node_resources = ({n.name: n.resources for n in synth.report.nodes} if synth else
                      {n.name: n.resources for n in finn.layers})
    rows = []
    for m in metrics:
        nodes = groups.get(m.layer, [])
        hw = {} if not nodes else {
            **{k: sum(node_resources[n.name].get(k) for n in nodes) for k in BUDGETED},
            "cycles": max(n.cycles for n in nodes)}
        rows.append(LayerRow(layer=m.layer, weight_bits=m.weight_bits, act_bits=m.act_bits,
                             channels=f"{m.out_ch}/{m.full_out_ch}", weight_mbit=m.weight_mbit,
                             act_mbit=m.act_mbit, nodes=[n.name for n in nodes], **hw))
    return rows


def write_summary(run_dir: Path, summary: Summary) -> Path:
    """summary.json in the run folder, atomically, and its checksum file beside it."""
    path = run_dir / SUMMARY_FILE
    atomic_write_json(path, summary.model_dump(mode="json"))
    atomic_write_text(_checksum_file(path), f"{file_sha256(path)}  {path.name}\n")
    return path


def read_summary(run_dir: Path) -> Summary:
    """A run folder's summary.json, refused in one line unless it is there, in the schema version
    this densiflow reads, and as densiflow wrote it (its checksum file, sha256sum's format)."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        raise RunFolderError(f"{run_dir}: no summary.json; the run has not finished: "
                             f"{run_command(run_dir)}")
    redo = f"rewrite it: {run_command(run_dir, 'report')}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        data = None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if data is None or not isinstance(version, int):
        raise ArtefactError(f"{path} is damaged or from another densiflow version; {redo}")
    if version != SCHEMA_VERSION:
        raise ArtefactError(f"{path} has schema_version {version}; this densiflow reads version "
                            f"{SCHEMA_VERSION}; {redo}")
    checksum = _checksum_file(path)
    if not checksum.is_file():
        raise ArtefactError(f"{path} has no checksum file {checksum.name}; {redo}")
    if checksum.read_text(encoding="utf-8", errors="replace").split()[:1] != [file_sha256(path)]:
        raise ArtefactError(f"{path} was changed after densiflow wrote it (its {checksum.name} "
                            f"differs); {redo}")
    try:
        return Summary.model_validate(data)
    except ValidationError:
        raise ArtefactError(f"{path} is damaged or from another densiflow version; {redo}") \
            from None


def _checksum_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def print_summary(summary: Summary, console: Console | None = None) -> None:
    """The per-layer table and the totals, for the terminal."""
    console = console or Console()
    hw = summary.hardware
    table = Table(title=f"densiflow run '{summary.run}': {summary.arch} on {summary.dataset}, "
                        f"{summary.method} plan, {summary.board} ({hw.resource_source.label})")
    for col in ("layer", "W/A bits", "channels", "weight Mbit", "act Mbit", "LUT", "BRAM18",
                "DSP", "cycles"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for r in summary.layers:
        table.add_row(
            r.layer, f"{r.weight_bits}/{r.act_bits or '-'}", r.channels,
            f"{r.weight_mbit:.4f}", f"{r.act_mbit:.4f}",
            *("-" if v is None else f"{v:.0f}" for v in (r.lut, r.bram18, r.dsp, r.cycles)),
        )
    m, res = summary.memory, hw.resources
    table.add_row("total", "", "", f"{m.weight_mbit:.4f}", f"{m.act_mbit:.4f}", f"{res.lut:.0f}",
                  f"{res.bram18:.0f}", f"{res.dsp:.0f}", str(hw.steady_state_cycles),
                  style="bold")
    console.print(table)
    for line in summary_lines(summary):
        console.print(line, markup=False, highlight=False)


def summary_lines(summary: Summary) -> list[str]:
    """The run's headline figures, one line each, every accuracy named by its stage."""
    acc, m, hw = summary.accuracy, summary.memory, summary.hardware
    lines = [
        f"test accuracy: float {100 * acc.float_test:.2f} %, after QAT {100 * acc.qat_test:.2f} %"
        + (f", simulated RTL {100 * acc.rtl_test:.2f} %" if acc.rtl_test is not None else "")
        + f" (QAT vs float {-summary.accuracy_drop_points:+.2f} points)",
        f"size: {m.total_mbit:.4f} Mbit (weights {m.weight_mbit:.4f} + activations "
        f"{m.act_mbit:.4f}), average bit-width {m.avg_bits:.2f}, performance density "
        f"{summary.performance_density:.1f} %/Mbit (after QAT)",
    ]
    fit = "fits" if hw.fits else f"DOES NOT FIT (over: {', '.join(hw.over)})"
    lines.append(
        f"hardware ({hw.resource_source.label}): {hw.fps:,.0f} frames/s at {hw.clock_mhz:g} MHz "
        f"(target {hw.target_fps:,.0f}: {'met' if hw.target_met else 'MISSED'}), latency "
        f"{hw.latency_us:.2f} us, {fit} on {summary.board}")
    if hw.synthesis is not None:
        lines.append(hw.synthesis.line)
    if hw.vivado is not None:
        lines.append(vivado_line(hw.vivado))
    if hw.folding_report is not None:
        f, r = hw.folding_report, hw.folding_report.setfolding_resources
        lines.append(
            f"folding optimiser: {hw.fps:,.0f} frames/s vs FINN SetFolding {f.setfolding_fps:,.0f} "
            f"at the same target (LUT {r.lut:.0f}, BRAM18 {r.bram18:.0f}, DSP {r.dsp:.0f}); "
            f"resource-bound ceiling {f.ceiling_fps:,.0f} frames/s, bound by {f.binding}; "
            f"cost-model LUT incl. LUTRAM weights {f.cost_model_resources.lut:.0f}")
    if hw.fifo_sizing is not None:
        z = hw.fifo_sizing
        lines.append(f"FIFO sizing by simulation: {z.cycles_per_frame_sized:.0f} cycles/frame vs "
                     f"{z.cycles_per_frame_deep:.0f} with deep FIFOs; saved LUT {z.lut_saved:.0f}, "
                     f"BRAM18 {z.bram18_saved:.0f} (FINN estimate)")
    if summary.simulation is None:
        lines.append(f"RTL simulation: skipped ({summary.simulation_skipped})")
    else:
        lines += summary.simulation.lines()
    if summary.deployment is not None:
        dep = summary.deployment
        lines.append(f"deployment: {dep.folder}" + ("" if dep.bitstream else f" ({dep.missing})"))
    if summary.hil is not None:
        h = summary.hil
        lines.append(f"HIL ({h.backend}, {h.target}): {h.frames} frames, {h.mismatches} of "
                     f"{h.output_words} words differ, {h.wall_fps:.1f} frames/s wall")
    return lines


def load_current_summary(path: Path) -> Summary:
    """A run folder's summary, refused unless it describes the run's current finished steps."""
    folder = RunFolder.open(path)
    summary = read_summary(path)
    try:
        recipe = load_recipe(path / "recipe.yaml")
    except ConfigError as err:
        raise RunFolderError(f"{path}: its saved recipe.yaml is unreadable ({err})") from None
    status = step_status(folder, recipe)
    stale = [s for s, sm in summary.steps.items() if status.get(s) is None
             or status[s].id != sm.id]
    if stale or status.get("report") is None:
        redo = folder.mark().get("redo_from")
        why = f"steps from '{redo}' on are being redone" if redo else \
            f"steps {', '.join(stale) or 'report'} changed since it was written"
        raise RunFolderError(f"{path}: summary.json is out of date ({why}); finish the run: "
                             f"{run_command(path)}")
    return summary


def add_hil(run_dir: Path, result: HilResult) -> None:
    """A HIL validation's result into the run's (current) summary."""
    summary = load_current_summary(run_dir)
    write_summary(run_dir, summary.model_copy(update={"hil": hil_summary(result)}))
