"""FINN's own view of a folding: its estimate (res_estimation, exp_cycles) of a folded model with
the width converters and FIFOs FINN inserts, and FINN's SetFolding at the same target."""
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
    """A copy with FINN's width converters and FIFOs (fifo_depth words), specialised (RTL first)."""
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.general import GiveUniqueNodeNames

    m = copy.deepcopy(model).transform(InsertDWC())
    m = m.transform(InsertFIFO(create_shallow_fifos=True))
    for node in m.get_nodes_by_op_type("StreamingFIFO"):
        inst = getCustomOp(node)
        inst.set_nodeattr("depth", max(int(inst.get_nodeattr("depth")), fifo_depth))
    m = prefer_rtl_for_unspecialised(m).transform(SpecializeLayers(part))
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


def finn_setfolding(model, target_cycles: int, mvau_wwidth_max: int = 36):
    """A copy of the model folded by FINN's own SetFolding (two-pass relaxation, FINN defaults)."""
    from finn.transformation.fpgadataflow.set_folding import SetFolding

    finn_log = logging.getLogger("finn_logger")
    level = finn_log.level
    finn_log.setLevel(logging.ERROR)
    try:
        return copy.deepcopy(model).transform(SetFolding(target_cycles, mvau_wwidth_max))
    finally:
        finn_log.setLevel(level)
