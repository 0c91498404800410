"""The analytic screen: a plan's FINN dataflow graph from the layer geometry, folded, costed.

For every plan the search derives the HW layers FINN builds for the network's nodes, with the
widths the plan gives them and the worst-case accumulator (what is known before FINN sees the
weights): input Thresholding; per convolution FMPadding if padded, a sliding window and an MVAU
(a depthwise one: a depthwise sliding window and a VVAU, RTL on every part as
hw_models.finn_ops.vvau specialises it); a Thresholding after every quantized layer output, and on
every input of a residual add, identity skips too (the add's shared quantizer, at its main
branch's bits); an MVAU per linear layer; per max/average pool a depthwise sliding window and a
Pool (average: a sum pool, its 1/k² absorbed into the next thresholds); per global average pool a
GlobalAccPool; per residual add an AddStreams (one bit wider than its wider input) and the
Thresholding of its ReLU; a DuplicateStreams wherever a stream feeds more than one node (tests:
the same layers as FINN's build of the plan). Each layer takes the fewest lanes that meet the
target cycles per frame (SetFolding's rule; an RTL MVAU's SIMD fits its sliding window's,
`flow.finn.folding.mvau_folding`; a depthwise sliding window runs at its consumer's PE); where a
layer cannot reach the target, the graph is refolded at the rate it can reach. The calibrated
cost model (hw_models.cost) prices the layers, and the width converters and FIFOs their stream
widths imply on every edge (hw_models.folding.link_resources). Throughput is the slowest layer's,
latency the longest input-to-output path (hw_models.cycles). One plan takes a few milliseconds.

The FINN build may fold otherwise (densiflow's folding optimiser finds cheaper foldings): the
search reports the screen's error against FINN's estimate on every candidate FINN estimated.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from flow.finn.folding import mvau_folding
from flow.models import INPUT, Architecture
from flow.recipe.plan import CompressionPlan
from hw_models.boards import Board
from hw_models.cost import (
    AddStreamsLayer,
    Calibration,
    DuplicateStreamsLayer,
    GlobalAccPoolLayer,
    Layer,
    MvauLayer,
    PaddingLayer,
    PoolLayer,
    SlidingWindowLayer,
    ThresholdingLayer,
    VvauLayer,
    acc_bits_bound,
    dsp_type_of_part,
    estimate,
    layer_cycles,
)
from hw_models.cycles import pipeline_performance
from hw_models.folding import link_resources
from hw_models.resources import Resources, ResourceSource
from hw_models.rules import MIN_RTL_BITS, divisors, vvau_rtl_folding

MVAU_WWIDTH_MAX = 36  # SetFolding's default cap on SIMD x weight bits
LAYER_KINDS = ("conv", "linear")


class HwFigures(BaseModel):
    """Resources and throughput of one design, from one source."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: ResourceSource
    resources: Resources
    cycles: int  # the slowest layer's cycles per frame
    fps: float
    bottleneck: str
    latency_cycles: int | None = None  # first frame, the longest path (None: not known)

    @property
    def lut_bram18(self) -> float:
        """LUTs + BRAM18s, the search's resource objective."""
        return self.resources.lut + self.resources.bram18


@dataclass
class HwGraph:
    """HW layers in stream (topological) order and the streams between them."""

    layers: list[Layer] = field(default_factory=list)
    edges: list[tuple[int, int, int]] = field(default_factory=list)  # (producer, consumer, port)

    def add(self, layer: Layer, *inputs: int) -> int:
        """Append a layer fed by `inputs` (its ports in order); its index."""
        self.layers.append(layer)
        self.edges += [(src, len(self.layers) - 1, port) for port, src in enumerate(inputs)]
        return len(self.layers) - 1

    def producer(self, index: int, port: int = 0) -> int | None:
        return next((s for s, d, p in self.edges if d == index and p == port), None)


@dataclass(frozen=True)
class _Stream:
    """A node's output as the HW graph carries it: the layer emitting it and its shape."""

    tail: int
    channels: int
    hw: int
    bits: int


def _conv(g: HwGraph, spec, geo, lp, src: _Stream, dsp, prefix: str) -> int:
    """FMPadding, sliding window and MVAU/VVAU of one convolution; the unit's index."""
    tail, ifm, p = src.tail, src.hw + 2 * spec.padding, spec.padding
    depthwise = spec.depthwise
    if p:
        tail = g.add(PaddingLayer(name=f"{prefix}.pad", channels=geo.in_ch, img_dim=(src.hw,) * 2,
                                  padding=(p, p, p, p), input_bits=src.bits), tail)
    if spec.kernel > 1 or spec.stride > 1 or depthwise:
        tail = g.add(SlidingWindowLayer(
            name=f"{prefix}.swg", channels=geo.in_ch, ifm_dim=(ifm, ifm),
            ofm_dim=(geo.out_hw,) * 2, kernel=(spec.kernel,) * 2, stride=(spec.stride,) * 2,
            depthwise=depthwise, input_bits=src.bits), tail)
    rtl = lp.weight_bits >= MIN_RTL_BITS and src.bits >= MIN_RTL_BITS
    if depthwise:
        acc = acc_bits_bound(spec.kernel ** 2, lp.weight_bits, src.bits, False)
        return g.add(VvauLayer(
            name=f"{prefix}.vvau", impl="rtl" if rtl else "hls",
            channels=geo.out_ch, kernel=(spec.kernel,) * 2, dim=(geo.out_hw,) * 2,
            weight_bits=lp.weight_bits, input_bits=src.bits, output_bits=acc, dsp_type=dsp), tail)
    mw = geo.in_ch * spec.kernel ** 2
    acc = acc_bits_bound(mw, lp.weight_bits, src.bits, False)
    return g.add(MvauLayer(name=f"{prefix}.mvau", impl="rtl" if rtl else "hls", mw=mw,
                           mh=geo.out_ch, vectors=geo.out_hw ** 2, weight_bits=lp.weight_bits,
                           input_bits=src.bits, output_bits=acc, dsp_type=dsp), tail)


def _pool(g: HwGraph, node, src: _Stream) -> _Stream:
    """Sliding window and Pool of a max/average pool (average: a sum pool, its 1/k² in the next
    layer's thresholds, flow.finn.rewrites)."""
    out_hw = (src.hw + 2 * node.padding - node.kernel) // node.stride + 1
    tail, ifm, p = src.tail, src.hw + 2 * node.padding, node.padding
    if p:
        tail = g.add(PaddingLayer(name=f"{node.name}.pad", channels=src.channels,
                                  img_dim=(src.hw,) * 2, padding=(p, p, p, p),
                                  input_bits=src.bits), tail)
    tail = g.add(SlidingWindowLayer(
        name=f"{node.name}.swg", channels=src.channels, ifm_dim=(ifm, ifm), ofm_dim=(out_hw,) * 2,
        kernel=(node.kernel,) * 2, stride=(node.stride,) * 2, depthwise=True,
        input_bits=src.bits), tail)
    window = node.kernel ** 2
    if node.kind == "maxpool":
        tail = g.add(PoolLayer(name=f"{node.name}.pool", impl="rtl", channels=src.channels,
                               kernel=window, out_pixels=out_hw ** 2, input_bits=src.bits), tail)
        return _Stream(tail, src.channels, out_hw, src.bits)
    acc = src.bits + math.ceil(math.log2(window))
    tail = g.add(PoolLayer(name=f"{node.name}.pool", impl="rtl", channels=src.channels,
                           kernel=window, out_pixels=out_hw ** 2, input_bits=src.bits,
                           output_bits=acc, function="AccPool"), tail)
    return _Stream(tail, src.channels, out_hw, acc)


def _layer(g: HwGraph, arch: Architecture, node, geo, plan: CompressionPlan,
           src: _Stream, dsp) -> _Stream:
    """A conv or linear layer and the Thresholding of its quantized output."""
    lp = plan.layers[node.name]
    if node.kind == "conv":
        tail, out_hw = _conv(g, node, geo, lp, src, dsp, node.name), geo.out_hw
    else:
        acc = acc_bits_bound(geo.in_ch, lp.weight_bits, src.bits, False)
        rtl = lp.weight_bits >= MIN_RTL_BITS and src.bits >= MIN_RTL_BITS
        tail = g.add(MvauLayer(name=f"{node.name}.mvau", impl="rtl" if rtl else "hls",
                               mw=geo.in_ch, mh=geo.out_ch, vectors=1, weight_bits=lp.weight_bits,
                               input_bits=src.bits, output_bits=acc, dsp_type=dsp), src.tail)
        out_hw = 1
    bits = _out_bits(arch, node, plan)
    if bits is None:
        return _Stream(tail, geo.out_ch, out_hw, g.layers[tail].output_bits)
    tail = g.add(ThresholdingLayer(name=f"{node.name}.thr", channels=geo.out_ch,
                                   vectors=out_hw ** 2, input_bits=g.layers[tail].output_bits,
                                   output_bits=bits), tail)
    return _Stream(tail, geo.out_ch, out_hw, bits)


def _add(g: HwGraph, arch: Architecture, node, plan: CompressionPlan,
         srcs: list[_Stream]) -> _Stream:
    """AddStreams of a residual add (one bit wider than its wider input) and its ReLU's
    Thresholding, at the bits of the add's shared quantizer; an input that is another node's
    activation (an identity skip) passes that quantizer as a Thresholding of its own."""
    bits = plan.layers[arch.add_bits_source(node.name)].act_bits
    ports = []
    for port, (src, s) in enumerate(zip(arch.inputs_of(node.name), srcs)):
        spec = arch.node(src)
        if not (spec.kind in LAYER_KINDS and spec.act is None):  # not yet at the add's quantizer
            tail = g.add(ThresholdingLayer(name=f"{node.name}.in{port}.thr", channels=s.channels,
                                           vectors=s.hw ** 2, input_bits=s.bits,
                                           output_bits=bits), s.tail)
            s = _Stream(tail, s.channels, s.hw, bits)
        ports.append(s)
    a, b = ports
    tail = g.add(AddStreamsLayer(name=f"{node.name}.add", channels=a.channels, vectors=a.hw ** 2,
                                 input_bits=(a.bits, b.bits), output_bits=max(a.bits, b.bits) + 1),
                 a.tail, b.tail)
    if node.act is None:
        return _Stream(tail, a.channels, a.hw, g.layers[tail].output_bits)
    tail = g.add(ThresholdingLayer(name=f"{node.name}.thr", channels=a.channels,
                                   vectors=a.hw ** 2, input_bits=g.layers[tail].output_bits,
                                   output_bits=bits), tail)
    return _Stream(tail, a.channels, a.hw, bits)


def _gap(g: HwGraph, node, src: _Stream) -> _Stream:
    """GlobalAccPool: the per-channel sum of every pixel (the mean's 1/N moves into the next
    linear layer's output scale, flow.finn.rewrites)."""
    acc = src.bits + math.ceil(math.log2(src.hw ** 2))
    tail = g.add(GlobalAccPoolLayer(name=f"{node.name}.gap", channels=src.channels,
                                    vectors=src.hw ** 2, input_bits=src.bits, output_bits=acc),
                 src.tail)
    return _Stream(tail, src.channels, 1, acc)


def plan_layers(arch: Architecture, plan: CompressionPlan, pixel_bits: int,
                part: str) -> HwGraph:
    """The unfolded HW layers of a plan's network and the streams between them."""
    dsp = dsp_type_of_part(part)
    readers = Counter(i for node in arch.nodes for i in arch.inputs_of(node.name))
    geometry = {geo.name: geo for geo in arch.geometry(plan)}
    g = HwGraph()
    in_ch, hw = arch.in_shape[0], arch.in_shape[1]
    first = g.add(ThresholdingLayer(name="input.thr", channels=in_ch, vectors=hw * hw,
                                    input_bits=pixel_bits, output_bits=plan.input_bits))
    streams = {INPUT: _Stream(first, in_ch, hw, plan.input_bits)}
    for node in (None, *arch.nodes):
        name = INPUT if node is None else node.name
        if node is not None:
            srcs = [streams[i] for i in arch.inputs_of(name)]
            if node.kind in LAYER_KINDS:
                streams[name] = _layer(g, arch, node, geometry[name], plan, srcs[0], dsp)
            elif node.kind in ("maxpool", "avgpool"):
                streams[name] = _pool(g, node, srcs[0])
            elif node.kind == "gap":
                streams[name] = _gap(g, node, srcs[0])
            elif node.kind == "add":
                streams[name] = _add(g, arch, node, plan, srcs)
            else:  # flatten: the stream is unchanged (a linear layer reads it channel-major)
                streams[name] = srcs[0]
        if readers[name] > 1:  # a fork: DuplicateStreams, one output per reader
            s = streams[name]
            dup = g.add(DuplicateStreamsLayer(name=f"{name}.dup", channels=s.channels,
                                              vectors=s.hw ** 2, outputs=readers[name],
                                              input_bits=s.bits), s.tail)
            streams[name] = _Stream(dup, s.channels, s.hw, s.bits)
    return g


def _out_bits(arch: Architecture, node, plan: CompressionPlan) -> int | None:
    """Bits of a layer's quantized output: its act_bits after an activation; without one (it
    feeds adds only), the adds' shared quantizer's (their main branch's act_bits); None: the
    classifier's logits."""
    if node.act is not None:
        return plan.layers[node.name].act_bits
    adds = arch.consumers(node.name)
    return plan.layers[arch.add_bits_source(adds[0])].act_bits if adds else None


def _smallest(layer: Layer, field: str, n: int, target: int) -> Layer:
    """The layer with `field` at the smallest divisor of n meeting the target (else n)."""
    for d in divisors(n):
        folded = layer.model_copy(update={field: d})
        if layer_cycles(folded) <= target:
            return folded
    return folded


def _setfolding_mvau_cycles(x: MvauLayer, target: int) -> int:
    """Cycles of FINN's SetFolding choice for an MVAU: SIMD up while the weights per PE stay
    within MVAU_WWIDTH_MAX bits, then PE up, until the target is met."""
    simd = 1
    for s in divisors(x.mw):
        fast = layer_cycles(x.model_copy(update={"simd": s})) <= target
        if not fast and s * x.weight_bits > MVAU_WWIDTH_MAX:
            break
        simd = s
        if fast:
            break
    return layer_cycles(_smallest(x.model_copy(update={"simd": simd}), "pe", x.mh, target))


def _fold_one(layer: Layer, target: int, producer: Layer | None) -> Layer:
    if isinstance(layer, MvauLayer):
        in_simd = producer.simd if isinstance(producer, SlidingWindowLayer) else None
        cap = _setfolding_mvau_cycles(layer, target)
        simd, pe = mvau_folding(layer.mw, layer.mh, layer.vectors, cap, in_simd)
        return layer.model_copy(update={"simd": simd, "pe": pe})
    if isinstance(layer, VvauLayer):  # PE over channels, then SIMD over the window
        window = layer.kernel[0] * layer.kernel[1]
        folded = _smallest(layer, "pe", layer.channels, target)
        if layer_cycles(folded) > target:
            folded = _smallest(folded, "simd", window, target)
        simd, pe = vvau_rtl_folding(window, layer.channels, folded.simd, folded.pe)
        return folded.model_copy(update={"simd": simd, "pe": pe})
    if isinstance(layer, SlidingWindowLayer):
        folded = _smallest(layer, "simd", layer.channels, target)
        if layer_cycles(folded) > target and not layer.depthwise:
            folded = folded.model_copy(update={"parallel_window": True})
        return folded
    if isinstance(layer, PaddingLayer):
        return _smallest(layer, "simd", layer.channels, target)
    if isinstance(layer, (ThresholdingLayer, PoolLayer, GlobalAccPoolLayer,
                          DuplicateStreamsLayer, AddStreamsLayer)):
        return _smallest(layer, "pe", layer.channels, target)
    return layer


def _depthwise_windows(g: HwGraph, layers: list[Layer]) -> list[Layer]:
    """A depthwise sliding window runs at its VVAU's or Pool's PE (all of a VVAU's window at
    once when the VVAU's SIMD is above 1), as FINN's SetFolding sets it."""
    out = list(layers)
    for src, dst, _ in g.edges:
        swg, consumer = out[src], out[dst]
        if isinstance(swg, SlidingWindowLayer) and isinstance(consumer, (VvauLayer, PoolLayer)):
            parallel = isinstance(consumer, VvauLayer) and consumer.simd > 1
            out[src] = swg.model_copy(update={"simd": consumer.pe, "parallel_window": parallel})
    return out


def fold(g: HwGraph, target_cycles: int) -> HwGraph:
    """Each layer at the fewest lanes meeting the target; refolded at the reachable rate where
    a layer cannot meet it (SetFolding's two passes)."""
    for _ in range(2):
        folded: list[Layer] = []
        for i, layer in enumerate(g.layers):
            src = g.producer(i)
            folded.append(_fold_one(layer, target_cycles, None if src is None else folded[src]))
        folded = _depthwise_windows(g, folded)
        reached = max(layer_cycles(x) for x in folded)
        if reached <= target_cycles:
            break
        target_cycles = reached
    return HwGraph(folded, list(g.edges))


def stream_widths(layer: Layer, port: int = 0) -> tuple[int, int]:
    """(input `port`, output) stream word widths in bits of a folded layer."""
    if isinstance(layer, MvauLayer):
        return layer.simd * layer.input_bits, layer.pe * layer.output_bits
    if isinstance(layer, VvauLayer):
        return layer.simd * layer.pe * layer.input_bits, layer.pe * layer.output_bits
    if isinstance(layer, (ThresholdingLayer, PoolLayer, GlobalAccPoolLayer)):
        return layer.pe * layer.input_bits, layer.pe * (layer.output_bits or layer.input_bits)
    if isinstance(layer, DuplicateStreamsLayer):
        return (layer.pe * layer.input_bits,) * 2
    if isinstance(layer, AddStreamsLayer):
        return layer.pe * layer.input_bits[port], layer.pe * layer.output_bits
    if isinstance(layer, SlidingWindowLayer):
        window = layer.kernel[0] * layer.kernel[1] if layer.parallel_window else 1
        return layer.simd * layer.input_bits, layer.simd * layer.input_bits * window
    if isinstance(layer, PaddingLayer):
        return (layer.simd * layer.input_bits,) * 2
    raise TypeError(f"no stream widths for {layer.kind}")


def chain_figures(g: HwGraph, clock_mhz: float, fifo_depth: int,
                  calibration: Calibration) -> HwFigures:
    """Cost-model resources (layers, and the width converters and FIFOs of every stream and of
    the graph's input and output) and performance of a folded graph."""
    layers = g.layers
    parts = [estimate(x, calibration).resources for x in layers]
    parts += [link_resources(stream_widths(layers[a])[1], stream_widths(layers[b], port)[0],
                             fifo_depth, calibration) for a, b, port in g.edges]
    read = {a for a, _, _ in g.edges}
    ends = [stream_widths(layers[0])[0]] + [stream_widths(x)[1] for i, x in enumerate(layers)
                                            if i not in read]
    parts += [link_resources(w, w, fifo_depth, calibration) for w in ends]
    predecessors = {x.name: [layers[a].name for a, b, _ in g.edges if b == i]
                    for i, x in enumerate(layers)}
    perf = pipeline_performance({x.name: layer_cycles(x) for x in layers}, clock_mhz,
                                predecessors)
    return HwFigures(source=ResourceSource.COST_MODEL, resources=Resources.total(parts),
                     cycles=perf.steady_state_cycles, fps=perf.fps, bottleneck=perf.bottleneck,
                     latency_cycles=perf.latency_cycles)


def screen(arch: Architecture, plan: CompressionPlan, pixel_bits: int, board: Board,
           target_fps: float, clock_mhz: float, fifo_depth: int,
           calibration: Calibration) -> HwFigures:
    """The cost model's figures of a plan's accelerator at the target frame rate."""
    target = max(1, int(clock_mhz * 1e6 / target_fps))
    g = fold(plan_layers(arch, plan, pixel_bits, board.part), target)
    return chain_figures(g, clock_mhz, fifo_depth, calibration)
