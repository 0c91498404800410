"""FINN's own view of a folding: its estimate (res_estimation, exp_cycles) of a folded model with
the width converters and FIFOs FINN inserts, and FINN's SetFolding at the same target (densiflow's
RTL ops folded by SetFolding's rules for their HLS twins)."""
from __future__ import annotations

import copy
import logging

from hw_models.boards import Board, get_board
from hw_models.cost import finn_node_estimates
from hw_models.folding.report import Budget, DesignFigures, over_caps
from hw_models.resources import Resources, ResourceSource
from hw_models.rules import DEFAULT_FIFO_DEPTH


def prefer_rtl_for_unspecialised(model):
    """Ask for the RTL variant of every unspecialised FINN HW node (not the dataflow partition)."""
    from qonnx.custom_op.registry import getCustomOp

    for node in model.graph.node:
        if node.domain == "finn.custom_op.fpgadataflow" and node.op_type not in (
                "StreamingDataflowPartition",):
            getCustomOp(node).set_nodeattr("preferred_impl_style", "rtl")
    return model


def with_dwc_fifo(model, part: str, fifo_depth: int = DEFAULT_FIFO_DEPTH):
    """A copy with FINN's width converters and FIFOs (fifo_depth words, skip FIFOs deep enough for
    their residual block), specialised (RTL first, the depthwise VVAU too)."""
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.general import GiveUniqueNodeNames

    from hw_models.finn_ops.vvau import SpecializeVvauRtl
    from hw_models.rtlsim.residual import SizeSkipFifos

    m = copy.deepcopy(model).transform(InsertDWC())
    m = m.transform(InsertFIFO(create_shallow_fifos=True))
    for node in m.get_nodes_by_op_type("StreamingFIFO"):
        inst = getCustomOp(node)
        inst.set_nodeattr("depth", max(int(inst.get_nodeattr("depth")), fifo_depth))
    m = prefer_rtl_for_unspecialised(m).transform(SpecializeVvauRtl(part))
    m = m.transform(SpecializeLayers(part)).transform(SizeSkipFifos())
    return m.transform(GiveUniqueNodeNames())


def finn_figures(model, board: Board | str, clock_mhz: float, budget: Budget,
                 fifo_depth: int = DEFAULT_FIFO_DEPTH) -> DesignFigures:
    """FINN's estimate (res_estimation, exp_cycles) of a folded model with converters and FIFOs."""
    board = get_board(board)
    est = finn_node_estimates(with_dwc_fifo(model, board.part, fifo_depth), board.part)
    slow = max(est.values(), key=lambda c: c.cycles)
    used = Resources.total(c.resources for c in est.values())
    return DesignFigures(source=ResourceSource.FINN_ESTIMATE, fps=clock_mhz * 1e6 / slow.cycles,
                         cycles=slow.cycles, bottleneck=slow.name, resources=used,
                         fits=not over_caps(used, budget.caps(board)))


# densiflow's RTL ops (hw_models.finn_ops), which SetFolding's lists do not name: each is folded by
# the rule SetFolding applies to its HLS twin (same base op and attributes), or, for AddStreams
# (no twin in finn-plus 1.6.1), by its rule for PE ops (the smallest PE | NumChannels meeting the
# target, SetFolding.optimize_attribute_val).
HLS_TWINS = {"Pool_rtl": "Pool_hls", "GlobalAccPool_rtl": "GlobalAccPool_hls",
             "DuplicateStreams_rtl": "DuplicateStreams_hls"}
PE_OPS = ("AddStreams_rtl",)
_HLS_DOMAIN = "finn.custom_op.fpgadataflow.hls"


def _setfolding_pass(model, target_cycles: int, mvau_wwidth_max: int):
    """One SetFolding pass (no relaxation) on a copy, densiflow's ops included; names kept."""
    from finn.transformation.fpgadataflow.set_folding import SetFolding
    from qonnx.custom_op.registry import getCustomOp

    folding = SetFolding(target_cycles, mvau_wwidth_max, two_pass_relaxation=False)
    model = copy.deepcopy(model)
    before = [(n.name, n.op_type, n.domain) for n in model.graph.node]
    for node in model.graph.node:
        if node.op_type in PE_OPS:
            inst = getCustomOp(node)
            folding.optimize_attribute_val(inst, inst.get_nodeattr("NumChannels"), "PE")
        elif node.op_type in HLS_TWINS:
            node.op_type, node.domain = HLS_TWINS[node.op_type], _HLS_DOMAIN
    model = model.transform(folding)  # renames every node (GiveUniqueNodeNames), keeps the order
    for node, (name, op_type, domain) in zip(model.graph.node, before, strict=True):
        node.name, node.op_type, node.domain = name, op_type, domain
    return model


def finn_setfolding(model, target_cycles: int, mvau_wwidth_max: int = 36):
    """A copy of the model folded by FINN's own SetFolding (two-pass relaxation, FINN defaults),
    densiflow's RTL ops by the rules SetFolding has for their HLS twins (HLS_TWINS, PE_OPS).

    The relaxation is SetFolding's: when some node misses the target, fold again to the slowest
    node's cycles (so the rest of the pipeline is balanced to it).
    """
    from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles

    finn_log = logging.getLogger("finn_logger")
    level = finn_log.level
    finn_log.setLevel(logging.ERROR)
    try:
        folded = _setfolding_pass(model, target_cycles, mvau_wwidth_max)
        slowest = int(folded.transform(AnnotateCycles()).analysis(dataflow_performance)[
            "max_cycles"])
        if slowest > target_cycles:
            folded = _setfolding_pass(folded, slowest, mvau_wwidth_max)
    finally:
        finn_log.setLevel(level)
    return folded
