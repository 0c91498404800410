"""Vivado: is it here, the out-of-context TCL of the stitched RTL, FINN's bitfile flow, reports.

Everything that runs Vivado or Vitis HLS imports FINN's Vivado-facing modules inside the function
that needs them; importing this module needs neither the tools nor FINN.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from flow.finn.errors import VivadoError
from flow.finn.rtl import FILELIST, TOP_FILE, StitchedRtl
from hw_models.boards import Board
from hw_models.resources import Resources, ResourceSource

VIVADO_ENV = "XILINX_VIVADO"
OOC_TCL = "ooc_synth.tcl"
REPORTS = "reports"  # below the Vivado folder: utilisation XML, timing summary


def missing_tools(hls: bool = True) -> list[str]:
    """What the bitfile flow lacks here: XILINX_VIVADO, `vivado` on PATH, `vitis_hls` on PATH."""
    missing = [] if os.environ.get(VIVADO_ENV) else [f"{VIVADO_ENV} (source settings64.sh)"]
    tools = ("vivado", "vitis_hls") if hls else ("vivado",)
    return missing + [f"`{t}` on PATH" for t in tools if shutil.which(t) is None]


def vivado_available() -> bool:
    """Is Vivado here (XILINX_VIVADO set and `vivado` on PATH)?"""
    return not missing_tools(hls=False)


# ----------------------------------------------------------------------------- OOC TCL

_OOC_TEMPLATE = """\
# Out-of-context synthesis, placement and routing of densiflow's stitched RTL for @BOARD@.
# Written by flow.finn.vivado; the post-route utilisation and timing land in @REPORTS@/.
# Run from anywhere:  vivado -mode batch -source @TCL@
set here [file dirname [file normalize [info script]]]
set rtl [file normalize [file join $here .. rtl]]
set part @PART@
set period_ns @PERIOD@
set top @TOP@
set reports [file join $here @REPORTS@]
file mkdir $reports
create_project -in_memory -part $part
set fp [open [file join $rtl @FILELIST@] r]
set sources [split [string trim [read $fp]] "\\n"]
close $fp
foreach f [lrange $sources 0 end-1] { read_verilog -sv [file join $rtl $f] }
# the top names its memory files by absolute path: point them at this folder
set fp [open [file join $rtl @TOPFILE@] r]
set text [string map [list {@DATA@} [file join $rtl nodes]] [read $fp]]
close $fp
set moved [file join $here top_here.sv]
set fp [open $moved w]
puts -nonewline $fp $text
close $fp
read_verilog -sv $moved
synth_design -top $top -part $part -mode out_of_context
create_clock -name ap_clk -period $period_ns [get_ports ap_clk]
opt_design
place_design
route_design
report_utilization -hierarchical -hierarchical_depth 2 -format xml \\
    -file [file join $reports post_route_utilization.xml]
report_utilization -file [file join $reports post_route_utilization.rpt]
report_timing_summary -file [file join $reports post_route_timing.rpt]
"""


def render_ooc_tcl(rtl: StitchedRtl, board: Board, clock_mhz: float) -> str:
    """The TCL that synthesises, places and routes the stitched RTL alone for board's part."""
    values = {"@BOARD@": f"{board.name} ({board.part}) at {clock_mhz:g} MHz",
              "@REPORTS@": REPORTS, "@TCL@": OOC_TCL, "@PART@": board.part,
              "@PERIOD@": f"{1000.0 / clock_mhz:g}", "@TOP@": rtl.top_module,
              "@FILELIST@": FILELIST, "@TOPFILE@": TOP_FILE, "@DATA@": rtl.data_dir}
    text = _OOC_TEMPLATE
    for key, value in values.items():
        text = text.replace(key, value)
    return text


# ----------------------------------------------------------------------------- reports


class VivadoFigures(BaseModel):
    """Post-route utilisation and timing from Vivado, next to FINN's estimate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scope: str  # what was counted, e.g. "accelerator (StreamingDataflowPartition_1)"
    resources: Resources  # source: ResourceSource.VIVADO
    source: ResourceSource = ResourceSource.VIVADO
    finn_estimate: Resources
    estimate_error: dict[str, float | None]  # (estimate - vivado) / vivado; None: vivado has 0
    wns_ns: float | None  # worst negative slack; >= 0: timing met
    timing_met: bool | None
    reports: list[str]  # report files, relative to the deployment folder


def utilisation(report_xml: Path, model, cell: str) -> Resources:
    """Resources of `cell` (an instance name or "(top)") in a hierarchical utilisation XML.

    Read by FINN's own parser (post_synth_res); BRAM in 18 Kb halves (RAMB36 = 2 x RAMB18).
    """
    from finn.analysis.fpgadataflow.post_synth_res import post_synth_res

    rows = post_synth_res(model, report_xml)[0]
    if cell not in rows:
        raise VivadoError(f"{report_xml} has no utilisation row for {cell!r}; "
                          f"it has {', '.join(rows)}")
    r = rows[cell]
    return Resources(lut=r.get("LUT", 0), ff=r.get("FF", 0), dsp=r.get("DSP", 0),
                     uram=r.get("URAM", 0),
                     bram18=2 * r.get("BRAM_36K", 0) + r.get("BRAM_18K", 0))


_WNS = re.compile(r"WNS\(ns\)\s+TNS\(ns\).*?\n\s*-+[\s-]*\n\s*(-?\d+\.\d+|NA)", re.DOTALL)


def worst_slack(timing_rpt: Path) -> float | None:
    """WNS (ns) from a `report_timing_summary` file; None when Vivado reports NA."""
    m = _WNS.search(timing_rpt.read_text(errors="replace"))
    if m is None:
        raise VivadoError(f"{timing_rpt} has no design timing summary (WNS)")
    return None if m.group(1) == "NA" else float(m.group(1))


def estimate_error(estimate: Resources, measured: Resources) -> dict[str, float | None]:
    """(estimate - measured) / measured per budgeted resource; None where measured is 0."""
    from hw_models.resources import BUDGETED

    return {r: None if measured.get(r) == 0 else (estimate.get(r) - measured.get(r))
            / measured.get(r) for r in BUDGETED}


# ----------------------------------------------------------------------------- FINN's bitfile flow


class Bitfile(BaseModel):
    """What FINN's Vivado flow made (absolute paths)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bitfile: str
    hwh: str | None  # Zynq only
    utilisation_xml: str
    timing_rpt: str | None  # Zynq only (FINN's Vitis flow keeps it elsewhere)
    shell_model: str  # the partitioned model (IODMAs, accelerator), for the driver and reports


def _apply(model, stage: str, transforms: list):
    """model.transform each; VivadoError naming FINN's stage if one fails."""
    for t in transforms:
        try:
            model = model.transform(t)
        except Exception as e:
            raise VivadoError(f"FINN's {stage} failed: {type(e).__name__}: {e}") from e
    return model


def _zynq_project(model, board: Board, clk_ns: float, work: Path):
    """FINN's ZynqBuild: IODMAs, kernels, the PS block design, synthesis to bitfile."""
    from finn.transformation.fpgadataflow.make_zynq_proj import ZynqBuild

    return _apply(model, "Zynq project (ZynqBuild)", [
        ZynqBuild(board.finn_board, clk_ns, partition_model_dir=str(work / "kernels"))])


def _alveo_project(model, board: Board, clk_ns: float, work: Path):
    """FINN's Vitis flow as its builder runs it: IODMAs, IP, partitions, XOs, VitisBuild."""
    from finn.builder.build_dataflow_config import (
        DataflowBuildConfig,
        DataflowOutputType,
        ShellFlowType,
    )
    from finn.transformation.fpgadataflow.build_xo import BuildAllXOs
    from finn.transformation.fpgadataflow.hlssynth_ip import HLSSynthIP
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP
    from finn.transformation.fpgadataflow.vitis_build import VitisBuild

    from flow.finn.pynq_driver import insert_iodmas, partition_shell

    cfg = DataflowBuildConfig(output_dir=str(work / "vitis"), synth_clk_period_ns=clk_ns,
                              board=board.finn_board, shell_flow_type=ShellFlowType.VITIS_ALVEO,
                              generate_outputs=[DataflowOutputType.BITFILE])
    model = _apply(insert_iodmas(model, board), "IODMA IP generation (PrepareIP, HLSSynthIP)",
                   [PrepareIP(board.part, clk_ns), HLSSynthIP()])
    model = partition_shell(model, work / "kernels")
    return _apply(model, "Alveo project (BuildAllXOs, VitisBuild)",
                  [BuildAllXOs(board.part, clk_ns), VitisBuild(cfg)])


def _outputs(model, shell_model: Path) -> Bitfile:
    """Where FINN put the bitfile and the reports (its metadata properties)."""
    import json

    def first(prop: str) -> str:
        value = model.get_metadata_prop(prop)
        if value is None:
            raise VivadoError(f"FINN's flow finished without {prop!r}; see finn.log")
        return next(iter(json.loads(value).values())) if value.startswith("{") else value

    proj = model.get_metadata_prop("vivado_pynq_proj")
    impl = Path(proj) / "finn_zynq_link.runs" / "impl_1" if proj else None
    timing = impl / "top_wrapper_timing_summary_routed.rpt" if impl else None
    return Bitfile(bitfile=first("bitfile"), utilisation_xml=first("vivado_synth_rpt"),
                   hwh=model.get_metadata_prop("hw_handoff"),
                   timing_rpt=str(timing) if timing and timing.is_file() else None,
                   shell_model=str(shell_model))


def build_bitfile(rtl_model: Path, board: Board, clock_mhz: float, work: Path) -> Bitfile:
    """FINN's flow to a bitfile: PrepareIP, HLSSynthIP, CreateStitchedIP, ZynqBuild/Vitis.

    Runs Vivado (and Vitis HLS for the IODMAs); needs FINN's settings around it.
    """
    from finn.transformation.fpgadataflow.create_stitched_ip import CreateStitchedIP
    from finn.transformation.fpgadataflow.hlssynth_ip import HLSSynthIP
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP
    from qonnx.core.modelwrapper import ModelWrapper

    clk_ns = 1000.0 / clock_mhz
    model = ModelWrapper(str(rtl_model))
    model = _apply(model, "IP generation (PrepareIP, HLSSynthIP)",
                   [PrepareIP(board.part, clk_ns), HLSSynthIP()])
    model = _apply(model, "stitched IP (CreateStitchedIP)", [CreateStitchedIP(board.part, clk_ns)])
    model.save(str(work / "stitched_ip.onnx"))
    project = _zynq_project if board.shell_flow == "vivado_zynq" else _alveo_project
    model = project(model, board, clk_ns, work)
    model.save(str(work / "shell_model.onnx"))
    return _outputs(model, work / "shell_model.onnx")


def accelerator_cell(shell) -> str:
    """Name of the partition holding the accelerator (the one that is not an IODMA)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    for node in shell.get_nodes_by_op_type("StreamingDataflowPartition"):
        child = ModelWrapper(getCustomOp(node).get_nodeattr("model"))
        if not child.get_nodes_by_op_type("IODMA_hls"):
            return node.name
    raise VivadoError("the shell model has no accelerator partition (only IODMAs)")


def figures(estimate: Resources, utilisation_xml: Path, model, cell: str,
            timing_rpt: Path | None, root: Path) -> VivadoFigures:
    """Vivado's post-route figures of `cell` next to FINN's estimate."""
    used = utilisation(utilisation_xml, model, cell)
    wns = worst_slack(timing_rpt) if timing_rpt is not None else None
    reports = [p for p in (utilisation_xml, timing_rpt) if p is not None]
    return VivadoFigures(
        scope=cell, resources=used, finn_estimate=estimate,
        estimate_error=estimate_error(estimate, used), wns_ns=wns,
        timing_met=None if wns is None else wns >= 0,
        reports=[Path(p).resolve().relative_to(root).as_posix() for p in reports])
