"""Legal foldings of each node of a FINN dataflow chain, each costed by the cost model."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from hw_models.cost import (
    Calibration,
    LabelSelectLayer,
    Layer,
    MvauLayer,
    PaddingLayer,
    PoolLayer,
    SlidingWindowLayer,
    ThresholdingLayer,
    estimate,
    is_specialised_hw_node,
    layer_from_node,
)
from hw_models.folding.report import FoldingError
from hw_models.resources import Resources, ResourceSource
from hw_models.rules import divisors, mvau_simd_ok


@dataclass(frozen=True)
class Choice:
    """One legal folding of one node."""

    attrs: tuple[tuple[str, int | str], ...]  # node attrs: SIMD, PE, parallel_window, ram_style
    layer: Layer
    in_elems: int  # elements per input word
    out_elems: int  # elements per output word
    cycles: int
    resources: Resources


@dataclass(frozen=True)
class Slot:
    """One node of the chain and its legal foldings."""

    name: str
    op_type: str
    in_bits: int
    out_bits: int
    choices: tuple[Choice, ...]
    depthwise_swg: bool = False  # its consumer must take the same word (Pool/VVAU)


LUTRAM_MAX_DEPTH = 512  # weight memories at most this deep may be offered as LUTRAM


def _mvau_options(x: MvauLayer) -> list[tuple[dict, int, int]]:
    """SIMD | MW (RTL: MW/SIMD >= 2), PE | MH; shallow weight memories also as LUTRAM."""
    simds = [s for s in divisors(x.mw) if x.impl == "hls" or mvau_simd_ok(x.mw, s)]
    out = []
    for s in simds:
        for p in divisors(x.mh):
            out.append(({"SIMD": s, "PE": p, "ram_style": "auto"}, s, p))
            if x.mw * x.mh // (s * p) <= LUTRAM_MAX_DEPTH:
                out.append(({"SIMD": s, "PE": p, "ram_style": "distributed"}, s, p))
    return out


def _swg_options(x: SlidingWindowLayer) -> list[tuple[dict, int, int]]:
    out = [({"SIMD": s, "parallel_window": 0}, s, s) for s in divisors(x.channels)]
    if not x.depthwise and x.kernel != (1, 1) and 1 not in x.ifm_dim:
        k = x.kernel[0] * x.kernel[1]
        out.append(({"SIMD": x.channels, "parallel_window": 1}, x.channels, x.channels * k))
    return out


def _options(x: Layer) -> list[tuple[dict, int, int]]:
    """(attrs, in_elems, out_elems) of every legal folding of a layer."""
    if isinstance(x, MvauLayer):
        return _mvau_options(x)
    if isinstance(x, SlidingWindowLayer):
        return _swg_options(x)
    if isinstance(x, (ThresholdingLayer, PoolLayer)):
        return [({"PE": p}, p, p) for p in divisors(x.channels)]
    if isinstance(x, PaddingLayer):
        return [({"SIMD": s}, s, s) for s in divisors(x.channels)]
    if isinstance(x, LabelSelectLayer):
        return [({"PE": p}, p, 1) for p in divisors(x.labels)]
    return []


_FIELD = {"SIMD": "simd", "PE": "pe", "parallel_window": "parallel_window",
          "ram_style": "ram_style"}


def unseen_lutram(layer: Layer, cal: Calibration) -> float:
    """LUTs of an RTL MVAU's LUTRAM weights where the calibration counts none (FINN's estimate).

    FINN estimates 0 LUT for every RTL MVAU, so LUTRAM weights would look free; they are charged
    at the calibration's own LUTRAM rate for HLS MVAU weights (FINN-R: P*Q*W*ceil(WMEM/64)).
    A calibration from synthesis counts them itself.
    """
    if not (isinstance(layer, MvauLayer) and layer.impl == "rtl"
            and layer.ram_style == "distributed") or cal.source != ResourceSource.FINN_ESTIMATE:
        return 0.0
    if cal.coefficients.get("MVAU_rtl", {}).get("lut", {}).get("weights_lutram"):
        return 0.0
    rate = cal.coefficients.get("MVAU_hls", {}).get("lut", {}).get("weights_lutram", 1.0)
    wmem = layer.mw * layer.mh // (layer.simd * layer.pe)
    return rate * layer.pe * layer.simd * layer.weight_bits * math.ceil(wmem / 64)


def node_slot(node, part: str, cal: Calibration) -> Slot:
    """The node's legal foldings, each costed by the cost model."""
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    base = layer_from_node(node, part)
    in_bits = inst.get_input_datatype(0).bitwidth()
    out_bits = inst.get_output_datatype(0).bitwidth()
    choices = []
    for attrs, i, o in _options(base):
        upd = {_FIELD[k]: bool(v) if k == "parallel_window" else v for k, v in attrs.items()}
        layer = base.model_copy(update=upd)
        cost = estimate(layer, cal)
        res = cost.resources + Resources(lut=unseen_lutram(layer, cal))
        choices.append(Choice(tuple(attrs.items()), layer, i, o, cost.cycles, res))
    if not choices:  # not foldable here: keep it as it is
        cost = estimate(base, cal)
        i = int(inst.get_folded_input_shape(0)[-1])
        o = int(inst.get_folded_output_shape(0)[-1])
        choices.append(Choice((), base, i, o, cost.cycles, cost.resources))
    dw = isinstance(base, SlidingWindowLayer) and base.depthwise
    return Slot(node.name, node.op_type, in_bits, out_bits, tuple(choices), dw)


def foldable_chain(model) -> list:
    """The HW nodes of a dataflow model, checked to form one chain (each feeds the next)."""
    nodes = [n for n in model.graph.node if is_specialised_hw_node(n)]
    if not nodes:
        raise FoldingError("the model has no specialised FINN HW nodes (run SpecializeLayers)")
    for prev, node in itertools.pairwise(nodes):
        if model.find_producer(node.input[0]) is not prev:
            raise FoldingError(
                f"{node.name} is not fed by {prev.name}: the folding optimiser handles chains "
                "of HW layers only (no branches)")
    if any(n.op_type.startswith("StreamingDataWidthConverter") or n.op_type.startswith(
            "StreamingFIFO") for n in nodes):
        raise FoldingError("the model already has width converters or FIFOs: fold before "
                           "InsertDWC / InsertFIFO")
    return nodes
