"""Folding (PE/SIMD per layer): densiflow's optimiser (hw_models.folding), or FINN's SetFolding.

`fold` is the build's folding stage. "optimiser" (default) folds every layer, the sliding
windows included, for the fewest resources at the target frame rate within the board budget,
and reports the result next to FINN's SetFolding at the same target and the resource-bound
ceiling. "finn" is FINN's SetFolding plus a small pass fixing what it gets wrong for RTL layers
(Reshape's PE, the MVAU rules of hw_models.rules), naming the layers still over the target.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from hw_models.rules import divisors, mvau_simd_ok, vvau_rtl_folding

log = logging.getLogger(__name__)


def mvau_folding(mw: int, mh: int, vectors: int, max_cycles: int,
                 in_simd: int | None = None) -> tuple[int, int]:
    """(SIMD, PE) with the fewest lanes SIMD*PE taking at most max_cycles per frame.

    SIMD obeys hw_models.rules.mvau_simd_ok (divides MW, MW/SIMD >= 2, fits the producing
    sliding window's SIMD `in_simd`), PE | MH. Cycles per frame are FINN's
    (MW/SIMD)*(MH/PE)*vectors. If no folding is fast enough, the fastest allowed one.
    """
    simds = [s for s in divisors(mw) if mvau_simd_ok(mw, s, in_simd)]
    options = [(s, p) for s in simds for p in divisors(mh)]

    def cycles(o: tuple[int, int]) -> int:
        return (mw // o[0]) * (mh // o[1]) * vectors

    fast = [o for o in options if cycles(o) <= max_cycles]
    if fast:
        return min(fast, key=lambda o: (o[0] * o[1], cycles(o), o[0]))
    return min(options, key=lambda o: (cycles(o), o[0] * o[1]))


def refold_mvau(model, node) -> None:
    """Re-pick an RTL MVAU's SIMD/PE by mvau_folding, never slower than FINN's choice."""
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    producer = model.find_producer(node.input[0])
    in_simd = None
    if producer is not None and producer.op_type.startswith("ConvolutionInputGenerator"):
        in_simd = int(getCustomOp(producer).get_nodeattr("SIMD"))
    simd, pe = mvau_folding(
        int(inst.get_nodeattr("MW")), int(inst.get_nodeattr("MH")),
        int(np.prod(inst.get_nodeattr("numInputVectors"))), int(inst.get_exp_cycles()), in_simd,
    )
    inst.set_nodeattr("SIMD", simd)
    inst.set_nodeattr("PE", pe)


def refold_vvau(node) -> None:
    """An RTL VVAU's SIMD/PE by vvau_rtl_folding (SetFolding may take the whole window per
    cycle, which overflows finn-rtllib's output queue), never slower."""
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    simd, pe = vvau_rtl_folding(int(np.prod(inst.get_nodeattr("Kernel"))),
                                int(inst.get_nodeattr("Channels")), int(inst.get_nodeattr("SIMD")),
                                int(inst.get_nodeattr("PE")))
    inst.set_nodeattr("SIMD", simd)
    inst.set_nodeattr("PE", pe)


def refold_reshape(model, node) -> None:
    """A Reshape_rtl PE dividing both its input's and output's last axis.

    SetFolding picks a PE dividing the output's last axis only (e.g. a 1x1x28x28 -> 1x784
    flatten streams rows of 28, so PE | 28, not 784); the smallest valid PE at least as fast.
    """
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    common = math.gcd(model.get_tensor_shape(node.input[0])[-1],
                      model.get_tensor_shape(node.output[0])[-1])
    pe = int(inst.get_nodeattr("PE"))
    inst.set_nodeattr("PE", next(d for d in range(min(pe, common), common + 1) if common % d == 0))


def set_folding(model, target_cycles_per_frame: int):
    """PE/SIMD so that each layer takes at most target_cycles_per_frame (FINN's SetFolding;
    densiflow's RTL ops by the rules SetFolding has for their HLS twins).

    The layers still over the target at the end are logged as warnings (FINN's own mid-pass
    warnings are FINN's log records).
    """
    from finn.transformation.qonnx.give_unique_node_names_recursive import (
        GiveUniqueNodeNamesRecursive,
    )
    from qonnx.custom_op.registry import getCustomOp

    from hw_models.folding.finn_view import finn_setfolding

    target = max(1, int(target_cycles_per_frame))
    model = finn_setfolding(model, target)
    for node in model.get_nodes_by_op_type("Reshape_rtl"):
        refold_reshape(model, node)
    for node in model.get_nodes_by_op_type("MVAU_rtl"):
        refold_mvau(model, node)
    for node in model.get_nodes_by_op_type("VVAU_rtl"):
        refold_vvau(node)
    for node in model.graph.node:
        cycles = int(getCustomOp(node).get_exp_cycles())
        if cycles > target:
            log.warning("%s (%s): %d cycles/frame after folding, over the target of %d; it "
                        "limits the frame rate", node.name, node.op_type, cycles, target)
    return model.transform(GiveUniqueNodeNamesRecursive())


FOLDINGS = ("optimiser", "finn")


def fold(model, board, target_fps: float, clock_mhz: float, fifo_depth: int,
         method: str = "optimiser", budget=None, calibration=None):
    """The folded model and the optimiser's FoldingReport (None for FINN's SetFolding).

    The optimiser costs the layers, converters and FIFOs with `calibration` (a ResourceSource:
    FINN's estimate or Yosys synthesis); by default Yosys' calibration for the board's family
    where there is one (so that it sees what synthesis counts, e.g. the LUTs of a width
    converter), else FINN's estimate.
    """
    from finn.transformation.qonnx.give_unique_node_names_recursive import (
        GiveUniqueNodeNamesRecursive,
    )

    from hw_models.boards import get_board
    from hw_models.cost import board_calibration
    from hw_models.folding import Budget, finn_figures, optimise_folding

    target_cycles = max(1, int(clock_mhz * 1e6 / target_fps))
    if method == "finn":
        return set_folding(model, target_cycles), None
    budget = budget or Budget()
    cal = board_calibration(get_board(board).family, calibration)
    folded, report = optimise_folding(model, board, target_fps, budget=budget,
                                      clock_mhz=clock_mhz, calibration=cal,
                                      fifo_depth=fifo_depth, compare_with_finn=False)
    # FINN's estimate of both foldings; SetFolding with this module's fixes for RTL layers
    # (without them FINN's choice can be illegal, e.g. a Reshape PE not dividing its input)
    report = report.model_copy(update={
        "finn": finn_figures(folded, board, clock_mhz, budget, fifo_depth),
        "setfolding": finn_figures(set_folding(model, target_cycles), board, clock_mhz, budget,
                                   fifo_depth)})
    return folded.transform(GiveUniqueNodeNamesRecursive()), report
