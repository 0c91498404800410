"""The FINN dataflow build of a QONNX model, its per-layer estimates and its typed result.

`build_dataflow` runs the stages of `flow.finn.stages` in order, saves every intermediate ONNX
file in the work folder and returns a `FinnBuild` (also saved there as estimate.json):

  prepare_qonnx -> qonnx_to_finn -> tidy_up -> streamline -> convert_to_hw (standalone thresholds)
  -> minimize_bit_width  ......................... python-executable HW model ("hw_python")
  -> create_dataflow_partition ................... parent + child ("dataflow_python")
  -> specialize_layers (RTL preferred) -> set_folding (clock / target fps; RTL MVAU refolded)
  -> minimize_bit_width -> insert_dwc_fifo (fixed-depth FIFOs) -> annotate_cycles ("dataflow_rtl")

FINN's and QONNX's own warnings and log records go to finn.log in the work folder.
"""
from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from functools import partial
from numbers import Real
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, computed_field

from flow.core.errors import ModelError
from flow.core.io import atomic_write_text
from flow.finn.coverage import SoftwareNode, check_hw_coverage
from flow.finn.errors import ParameterError
from flow.finn.folding import FOLDINGS, fold
from flow.finn.noise import LOG_FILE, finn_output_to
from flow.finn.settings import finn_settings
from flow.finn.stages import (
    annotate_cycles,
    convert_to_hw,
    create_dataflow_partition,
    insert_dwc_fifo,
    minimize_bit_width,
    prepare_qonnx,
    qonnx_to_finn,
    specialize_layers,
    streamline,
    tidy_up,
)
from flow.finn.verify import HwVerification, random_input_batch, verify_hw_model
from hw_models.boards import Board, get_board
from hw_models.cycles import Performance, pipeline_performance
from hw_models.fit import FitReport, fit
from hw_models.folding import Budget, FoldingReport
from hw_models.resources import Resources, ResourceSource
from hw_models.rtlsim.fifo_sizing import FifoSizingReport
from hw_models.rules import DEFAULT_FIFO_DEPTH, MAX_FIFO_DEPTH, MIN_FIFO_DEPTH

log = logging.getLogger(__name__)

RESULT_FILE = "estimate.json"  # the FinnBuild, in the work folder
FINN_TO_RESOURCES = {"LUT": "lut", "BRAM_18K": "bram18", "URAM": "uram", "DSP": "dsp"}
Stage = Callable[[Any], Any]  # ModelWrapper -> ModelWrapper (qonnx is imported lazily)


# ----------------------------------------------------------------------------- result


class LayerEstimate(BaseModel):
    """One HW layer of the final dataflow model and FINN's estimates for it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    op_type: str
    impl_style: Literal["rtl", "hls"]
    pe: int | None
    simd: int | None
    resources: Resources  # FINN's estimate: no FFs
    cycles: int  # expected cycles per frame
    origin: str | None = None  # the QONNX node it came from, e.g. "Conv_5 (layer2.0.conv1)"


class FinnPerformance(BaseModel):
    """FINN's own `dataflow_performance` analysis, a cross-check of FinnBuild.performance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_cycles: int
    max_cycles_node_name: str
    critical_path_cycles: int


class FoldingSettings(BaseModel):
    """How the build folds: the method, the target and the share of the board it may use, and
    whether the FIFO depths are then sized by simulation (Verilator builds in `rtlsim_cache`)."""

    method: str
    target_fps: float
    clock_mhz: float
    budget: Budget | None = None
    fifo_sizing: bool = False
    rtlsim_cache: Path | None = None


class FinnBuild(BaseModel):
    """Result of a FINN dataflow build: per-layer estimates, totals, fit, performance, files.

    `paths` maps each stage to its ONNX file relative to the work folder; `path(key)` resolves
    one for a build made or loaded here (`FinnBuild.load(folder)`). `fit` and `fits` are derived
    from `totals` and `board`; a dump carries them for readers and loading ignores them.
    """

    model_config = ConfigDict(frozen=True)

    board: str
    part: str
    clock_mhz: float
    target_fps: float
    target_cycles_per_frame: int
    fifo_depth: int
    input_dtype: str
    layers: list[LayerEstimate]
    totals: Resources
    source: Literal[ResourceSource.FINN_ESTIMATE] = ResourceSource.FINN_ESTIMATE
    performance: Performance
    finn_performance: FinnPerformance
    hls_nodes: list[str]  # layers with no RTL implementation (HLS only)
    outside_partition: list[SoftwareNode]  # nodes left to the host
    paths: dict[str, str]
    verification: HwVerification | None = None
    folding_report: FoldingReport | None = None  # densiflow's optimiser (None: FINN SetFolding)
    fifo_sizing: FifoSizingReport | None = None  # FIFO depths sized by simulation (None: fixed)
    notes: list[str] = []
    _work_dir: Path | None = PrivateAttr(default=None)

    @computed_field
    @property
    def fit(self) -> FitReport:
        """The totals against the board's resources."""
        return fit(self.totals, self.board, self.source)

    @computed_field
    @property
    def fits(self) -> bool:
        return self.fit.fits

    @property
    def fps(self) -> float:
        return self.performance.fps

    def at(self, work_dir: Path | str) -> FinnBuild:
        """This build, with its files in `work_dir` (e.g. after its folder was renamed)."""
        build = self.model_copy()
        build._work_dir = Path(work_dir).resolve()
        return build

    @property
    def work_dir(self) -> Path:
        if self._work_dir is None:
            raise ModelError("this FINN build does not know its folder: use FinnBuild.load(folder)"
                             " or build.at(folder)")
        return self._work_dir

    def path(self, key: str) -> Path:
        """The absolute path of a stage's file, e.g. path('dataflow_rtl')."""
        if key not in self.paths:
            raise ModelError(f"FINN build has no file {key!r}; it has {', '.join(self.paths)}")
        return self.work_dir / self.paths[key]

    def save(self) -> Path:
        """Write the build as estimate.json in its work folder."""
        path = self.work_dir / RESULT_FILE
        atomic_write_text(path, self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def load(cls, work_dir: Path | str) -> FinnBuild:
        """The build saved in `work_dir`; ModelError naming the file if it is missing or bad."""
        path = Path(work_dir) / RESULT_FILE
        try:
            return cls.model_validate_json(path.read_bytes()).at(work_dir)
        except (OSError, ValidationError) as e:
            raise ModelError(f"{path} is not a readable FINN build result ({type(e).__name__}); "
                             "run the FINN build again") from None


# ----------------------------------------------------------------------------- estimates


def layer_estimates(model, part: str) -> list[LayerEstimate]:
    """Per-layer FINN estimates (resources, cycles, folding) of a specialised dataflow model."""
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    from finn.analysis.fpgadataflow.res_estimation import res_estimation
    from qonnx.custom_op.registry import getCustomOp

    from flow.finn.rewrites import origin

    res = model.analysis(lambda m: res_estimation(m, part))
    cycles = model.analysis(exp_cycles_per_layer)
    rows = []
    for node in model.graph.node:
        if node.name not in res:
            continue
        inst = getCustomOp(node)
        attrs = inst.get_nodeattr_types()
        rows.append(LayerEstimate(
            name=node.name, op_type=node.op_type,
            impl_style="rtl" if node.op_type.endswith("_rtl") else "hls",
            pe=int(inst.get_nodeattr("PE")) if "PE" in attrs else None,
            simd=int(inst.get_nodeattr("SIMD")) if "SIMD" in attrs else None,
            resources=Resources(**{FINN_TO_RESOURCES[k]: float(v)
                                   for k, v in res[node.name].items() if k in FINN_TO_RESOURCES}),
            cycles=int(cycles[node.name]), origin=origin(node),
        ))
    return rows


def _performance(model, rows: list[LayerEstimate], clock_mhz: float) -> Performance:
    """hw_models.cycles' throughput and latency of the layers, wired as in `model`."""
    preds = {n.name: [p.name for p in (model.find_direct_predecessors(n) or [])]
             for n in model.graph.node}
    return pipeline_performance({r.name: r.cycles for r in rows}, clock_mhz, preds)


def _finn_performance(model) -> FinnPerformance:
    """FINN's dataflow_performance of an annotated dataflow model."""
    from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance

    return FinnPerformance(**model.analysis(dataflow_performance))


def _notes(build: FinnBuild) -> list[str]:
    """What the user should know: the board is too small, the target is not reached."""
    notes = []
    if not build.fits:
        notes.append(f"does not fit {build.board}: too many {', '.join(build.fit.over)}")
    perf = build.performance
    allowed = build.clock_mhz * 1e6 / build.target_fps
    if perf.steady_state_cycles > allowed:
        notes.append(
            f"target {build.target_fps:g} fps not reached: {perf.fps:g} fps, the slowest layer "
            f"{perf.bottleneck} needs {perf.steady_state_cycles} cycles per frame where "
            f"{build.clock_mhz:g} MHz allows {allowed:.4g}"
        )
    return notes


# ----------------------------------------------------------------------------- inputs


def _finite_positive(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def check_parameters(board: Board, target_fps: float, clock_mhz: float | None, fifo_depth: int,
                     verify_frames: int = 0) -> float:
    """The clock (MHz) to build for; ParameterError naming the first parameter out of range."""
    if not _finite_positive(target_fps):
        raise ParameterError("target_fps", f"must be a finite number of frames/s > 0, "
                             f"got {target_fps!r}")
    if clock_mhz is not None and not _finite_positive(clock_mhz):
        raise ParameterError("clock_mhz", f"must be a finite number of MHz > 0 (or left out for "
                             f"{board.name}'s {board.clock_mhz:g} MHz), got {clock_mhz!r}")
    if (isinstance(fifo_depth, bool) or not isinstance(fifo_depth, int)
            or not MIN_FIFO_DEPTH <= fifo_depth <= MAX_FIFO_DEPTH):
        raise ParameterError("fifo_depth", f"must be a whole number of words from "
                             f"{MIN_FIFO_DEPTH} to {MAX_FIFO_DEPTH}, got {fifo_depth!r}")
    if isinstance(verify_frames, bool) or not isinstance(verify_frames, int) or verify_frames < 0:
        raise ParameterError("verify_frames", f"must be a whole number >= 0, got {verify_frames!r}")
    clock = board.clock_mhz if clock_mhz is None else float(clock_mhz)
    if not math.isfinite(clock * 1e6 / target_fps):
        raise ParameterError("target_fps", f"is too small to fold for, got {target_fps!r}")
    return clock


def target_cycles(clock_mhz: float, target_fps: float) -> int:
    """Cycles per frame each layer may take to reach target_fps (at least 1)."""
    return max(1, int(clock_mhz * 1e6 / target_fps))


# ----------------------------------------------------------------------------- build


def _save(model, stage: str, work: Path, paths: dict[str, str]) -> None:
    """Save a stage's model as <nn>_<stage>.onnx in work, numbered in the order stages ran."""
    paths[stage] = f"{len({p for p in paths.values() if p[:2].isdigit()}):02d}_{stage}.onnx"
    model.save(str(work / paths[stage]))


def _run_stages(model, stages: list[tuple[str, Stage]], work: Path, paths: dict[str, str],
                source: str):
    """Run named stages in order, saving each result in work (`_save`)."""
    for stage, fn in stages:
        try:
            model = fn(model)
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(
                f"{source}: FINN stage {stage!r} failed: {type(e).__name__}: {e}"
            ) from e
        _save(model, stage, work, paths)
    return model


def _hw_python(model, input_dtype: str | None, source: str, work: Path, paths: dict[str, str]):
    """(prepared QONNX model, python-executable HW-layer model), both saved."""
    from qonnx.core.modelwrapper import ModelWrapper

    qonnx_model = prepare_qonnx(ModelWrapper(copy.deepcopy(model.model)), input_dtype, source)
    _save(qonnx_model, "qonnx", work, paths)
    hw = _run_stages(qonnx_model, [
        ("qonnx_to_finn", qonnx_to_finn), ("tidy_up", tidy_up), ("streamline", streamline),
        ("convert_to_hw", convert_to_hw), ("minimize_bit_width", minimize_bit_width),
    ], work, paths, source)
    paths["hw_python"] = paths["minimize_bit_width"]
    return qonnx_model, hw


def _dataflow_rtl(hw, board: Board, folding: FoldingSettings, fifo_depth: int, source: str,
                  work: Path, paths: dict[str, str]):
    """The specialised, folded dataflow child model and the optimiser's folding report (None
    for FINN's SetFolding); the parent points at the child. Both saved."""
    from qonnx.custom_op.registry import getCustomOp

    part = board.part
    parent, child = create_dataflow_partition(hw, work / "partition")
    _save(child, "dataflow_python", work, paths)
    reports = []

    def fold_stage(model):
        folded, report = fold(model, board, folding.target_fps, folding.clock_mhz, fifo_depth,
                              folding.method, folding.budget)
        reports.append(report)
        return folded

    def size_stage(model):
        from hw_models.rtlsim import size_fifos

        sized, report = size_fifos(model, work / "fifo_sizing", part,
                                   cache_dir=folding.rtlsim_cache)
        reports.append(report)
        return annotate_cycles(sized)

    stages = [
        ("specialize_layers", partial(specialize_layers, part=part)),
        ("set_folding", fold_stage),
        ("minimize_bit_width_folded", minimize_bit_width),
        ("insert_dwc_fifo", partial(insert_dwc_fifo, part=part, fifo_depth=fifo_depth)),
        ("annotate_cycles", annotate_cycles),
    ] + ([("size_fifos", size_stage)] if folding.fifo_sizing else [])
    child = _run_stages(child, stages, work, paths, source)
    paths["dataflow_rtl"] = paths[stages[-1][0]]
    (sdp,) = parent.get_nodes_by_op_type("StreamingDataflowPartition")
    getCustomOp(sdp).set_nodeattr("model", str(work / paths["dataflow_rtl"]))  # FINN: absolute
    paths["dataflow_parent"] = "dataflow_parent.onnx"
    parent.save(str(work / paths["dataflow_parent"]))
    return child, reports[0], (reports[1] if folding.fifo_sizing else None)


def _verification(qonnx_model, hw, frames: int, inputs: np.ndarray | None,
                  tolerance: float) -> HwVerification | None:
    """QONNX vs HW python on `inputs`, else on `frames` random frames (none: not checked)."""
    if inputs is None and frames == 0:
        return None
    batch = random_input_batch(qonnx_model, frames) if inputs is None else inputs
    return verify_hw_model(qonnx_model, hw, batch, tolerance)


def build_dataflow(
    model,
    board: Board | str,
    target_fps: float,
    work_dir: Path | str,
    input_dtype: str | None = None,
    clock_mhz: float | None = None,
    verify_frames: int = 4,
    verify_tolerance: float = 0.05,
    source: str = "model",
    fifo_depth: int = DEFAULT_FIFO_DEPTH,
    verify_inputs: np.ndarray | None = None,
    folding_method: str = "optimiser",
    budget: Budget | None = None,
    fifo_sizing: bool = False,
    rtlsim_cache: Path | None = None,
) -> FinnBuild:
    """Run the FINN dataflow stages on a QONNX ModelWrapper (not modified) and estimate it.

    Saves each stage's ONNX file and estimate.json in `work_dir`. The HW-layer model is checked
    against QONNX on `verify_inputs`, else on `verify_frames` random frames (0: not checked).
    `folding_method` is "optimiser" (densiflow's, within `budget` of the board) or "finn"
    (SetFolding).
    `fifo_sizing` sizes the FIFO depths by Verilator simulation (builds cached in rtlsim_cache).
    """
    board = get_board(board)
    clock = check_parameters(board, target_fps, clock_mhz, fifo_depth, verify_frames)
    if folding_method not in FOLDINGS:
        raise ParameterError("folding", f"{folding_method!r} is not allowed; use "
                             f"{' or '.join(FOLDINGS)}")
    cycles = target_cycles(clock, target_fps)
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    with finn_settings(work), finn_output_to(work / LOG_FILE):
        paths: dict[str, str] = {}
        qonnx_model, hw = _hw_python(model, input_dtype, source, work, paths)
        outside = check_hw_coverage(hw, source)
        verification = _verification(qonnx_model, hw, verify_frames, verify_inputs,
                                     verify_tolerance)
        child, folding_report, sizing_report = _dataflow_rtl(
            hw, board, FoldingSettings(method=folding_method, target_fps=target_fps,
                                       clock_mhz=clock, budget=budget, fifo_sizing=fifo_sizing,
                                       rtlsim_cache=rtlsim_cache),
            fifo_depth, source, work, paths)
        rows = layer_estimates(child, board.part)
        finn_perf = _finn_performance(child)
    build = FinnBuild(
        board=board.name, part=board.part, clock_mhz=clock, target_fps=float(target_fps),
        target_cycles_per_frame=cycles, fifo_depth=fifo_depth,
        input_dtype=qonnx_model.get_tensor_datatype(qonnx_model.graph.input[0].name).name,
        layers=rows, totals=Resources.total(r.resources for r in rows),
        performance=_performance(child, rows, clock), finn_performance=finn_perf,
        hls_nodes=[r.name for r in rows if r.impl_style == "hls"], outside_partition=outside,
        paths=paths, verification=verification, folding_report=folding_report,
        fifo_sizing=sizing_report,
    )
    build = build.model_copy(update={"notes": _notes(build)}).at(work)
    build.save()
    for note in build.notes:
        log.warning(note)
    return build


def estimate_qonnx(
    onnx_path: Path | str,
    board: Board | str,
    target_fps: float,
    work_dir: Path | str,
    input_dtype: str | None = None,
    **kwargs,
) -> FinnBuild:
    """Estimate any QONNX file on `board` at `target_fps` (the CLI's `densiflow estimate`)."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper

    path = Path(onnx_path)
    if not path.is_file():
        raise ModelError(f"ONNX file not found: {path}")
    try:
        model = ModelWrapper(onnx.load(str(path)))
    except Exception as e:
        raise ModelError(f"{path} is not a readable ONNX file: {type(e).__name__}: {e}") from e
    return build_dataflow(model, board, target_fps, work_dir, input_dtype,
                          source=str(path), **kwargs)
