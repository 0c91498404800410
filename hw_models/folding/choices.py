"""Legal foldings of each node of a FINN dataflow graph, each costed by the cost model."""
from __future__ import annotations

import math
from dataclasses import dataclass

from hw_models.cost import (
    AddStreamsLayer,
    Calibration,
    DuplicateStreamsLayer,
    GlobalAccPoolLayer,
    LabelSelectLayer,
    Layer,
    MvauLayer,
    PaddingLayer,
    PoolLayer,
    SlidingWindowLayer,
    ThresholdingLayer,
    VvauLayer,
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
    in_elems: int  # elements per input word (of every input)
    out_elems: int  # elements per output word (of every output)
    cycles: int
    resources: Resources
    # the word layout a depthwise sliding window and its consumer (VVAU, Pool) must agree on:
    # (channels per word, whole window per word); None where the node has no such layout
    window_word: tuple[int, bool] | None = None


@dataclass(frozen=True)
class Slot:
    """One node of the graph, its legal foldings and its stream inputs."""

    name: str
    op_type: str
    in_bits: tuple[int, ...]  # bits per element of each stream input
    out_bits: int
    choices: tuple[Choice, ...]
    depthwise_swg: bool = False  # its consumer must take the same word layout (Pool/VVAU)
    producers: tuple[int | None, ...] = (None,)  # slot feeding each input; None: graph input


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
    """SIMD | channels; parallel_window (a whole window per word) with SIMD == channels, or any
    SIMD when depthwise (ConvolutionInputGenerator_rtl's impl-style asserts)."""
    out = [({"SIMD": s, "parallel_window": 0}, s, s) for s in divisors(x.channels)]
    if x.kernel != (1, 1) and 1 not in x.ifm_dim:
        k = x.kernel[0] * x.kernel[1]
        simds = divisors(x.channels) if x.depthwise else [x.channels]
        out += [({"SIMD": s, "parallel_window": 1}, s, s * k) for s in simds]
    return out


def _window_word(layer: Layer) -> tuple[int, bool] | None:
    """The word layout of a depthwise sliding window or of its consumer (VVAU SIMD == k*k takes
    a whole window per word, from a parallel_window sliding window; Pool never does)."""
    if isinstance(layer, SlidingWindowLayer) and layer.depthwise:
        return layer.simd, layer.parallel_window
    if isinstance(layer, VvauLayer):
        k = layer.kernel[0] * layer.kernel[1]
        return layer.pe, k > 1 and layer.simd == k
    if isinstance(layer, PoolLayer):
        return layer.pe, False
    return None


def _vvau_options(x: VvauLayer) -> list[tuple[dict, int, int]]:
    """PE | channels, SIMD | k_h * k_w (VVAU.get_folded_input_shape's asserts), for the RTL VVU
    with k_h * k_w / SIMD >= 2 (it shares the MVU's mvu_vvu_axi: hw_models.rules.mvau_simd_ok):
    PE * SIMD elements in, PE out."""
    k = x.kernel[0] * x.kernel[1]
    return [({"PE": p, "SIMD": q}, p * q, p) for p in divisors(x.channels) for q in divisors(k)
            if x.impl == "hls" or mvau_simd_ok(k, q)]


_PE_LAYERS = (ThresholdingLayer, PoolLayer, GlobalAccPoolLayer, DuplicateStreamsLayer,
              AddStreamsLayer)


def _options(x: Layer) -> list[tuple[dict, int, int]]:
    """(attrs, in_elems, out_elems) of every legal folding of a layer."""
    if isinstance(x, MvauLayer):
        return _mvau_options(x)
    if isinstance(x, VvauLayer):
        return _vvau_options(x)
    if isinstance(x, SlidingWindowLayer):
        return _swg_options(x)
    if isinstance(x, _PE_LAYERS):  # PE | channels: FINN's and densiflow's folded shapes
        return [({"PE": p}, p, p) for p in divisors(x.channels)]
    if isinstance(x, PaddingLayer):
        return [({"SIMD": s}, s, s) for s in divisors(x.channels)]
    if isinstance(x, LabelSelectLayer):
        return [({"PE": p}, p, 1) for p in divisors(x.labels)]
    return []


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


_FIELD = {"SIMD": "simd", "PE": "pe", "parallel_window": "parallel_window",
          "ram_style": "ram_style"}


def node_slot(node, part: str, cal: Calibration, producers: tuple[int | None, ...] = (None,)
              ) -> Slot:
    """The node's legal foldings, each costed by the cost model; `producers`: the slot feeding
    each of its stream inputs (None: the graph's input)."""
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    base = layer_from_node(node, part)
    in_bits = tuple(inst.get_input_datatype(i).bitwidth() for i in range(len(producers)))
    out_bits = inst.get_output_datatype(0).bitwidth()
    choices = []
    for attrs, i, o in _options(base):
        upd = {_FIELD[k]: bool(v) if k == "parallel_window" else v for k, v in attrs.items()}
        layer = base.model_copy(update=upd)
        cost = estimate(layer, cal)
        res = cost.resources + Resources(lut=unseen_lutram(layer, cal))
        choices.append(Choice(tuple(attrs.items()), layer, i, o, cost.cycles, res,
                              _window_word(layer)))
    if not choices:  # not foldable here: keep it as it is
        cost = estimate(base, cal)
        i = int(inst.get_folded_input_shape(0)[-1])
        o = int(inst.get_folded_output_shape(0)[-1])
        choices.append(Choice((), base, i, o, cost.cycles, cost.resources, _window_word(base)))
    dw = isinstance(base, SlidingWindowLayer) and base.depthwise
    return Slot(node.name, node.op_type, in_bits, out_bits, tuple(choices), dw, producers)


def stream_inputs(model, node) -> list[str]:
    """The node's streamed inputs (not its weights or thresholds, which are initializers)."""
    return [t for t in node.input if model.get_initializer(t) is None]


def foldable_graph(model) -> tuple[list, list[tuple[int | None, ...]]]:
    """The HW nodes of a dataflow model in graph order and, per node, the index of the node
    feeding each stream input (None: the graph's input); checked to be HW nodes only, in
    topological order, with no width converters or FIFOs yet."""
    nodes = [n for n in model.graph.node if is_specialised_hw_node(n)]
    if not nodes:
        raise FoldingError("the model has no specialised FINN HW nodes (run SpecializeLayers)")
    if any(n.op_type.startswith(("StreamingDataWidthConverter", "StreamingFIFO"))
           for n in nodes):
        raise FoldingError("the model already has width converters or FIFOs: fold before "
                           "InsertDWC / InsertFIFO")
    index = {n.name: i for i, n in enumerate(nodes)}
    producers = []
    for i, node in enumerate(nodes):
        feeds = []
        for tensor in stream_inputs(model, node):
            prod = model.find_producer(tensor)
            if prod is not None and index.get(prod.name, i) >= i:
                raise FoldingError(
                    f"{node.name} is fed by {prod.name} ({prod.op_type}), which is not a HW node "
                    "before it: fold a dataflow partition of specialised HW nodes in "
                    "topological order")
            feeds.append(None if prod is None else index[prod.name])
        producers.append(tuple(feeds))
    return nodes, producers
