"""The analytic screen: a plan's FINN dataflow chain from the layer geometry, folded, costed.

For every plan the search derives the HW layers FINN builds for the zoo's networks (input
Thresholding; per convolution FMPadding if padded, sliding window, MVAU; a Thresholding after
every hidden layer; an MVAU per linear layer), with the widths the plan gives them and the
worst-case accumulator (what is known before FINN sees the weights). Each layer takes the
fewest lanes that meet the target cycles per frame (SetFolding's rule; an RTL MVAU's SIMD fits its
sliding window's, `flow.finn.folding.mvau_folding`); where a layer cannot reach the target, the
chain is refolded at the rate it can reach. The calibrated cost model (hw_models.cost) prices the
layers, and the width converters and FIFOs their stream widths imply
(hw_models.folding.link_resources). One plan takes a few milliseconds.

The FINN build may fold otherwise (densiflow's folding optimiser finds cheaper foldings): the
search reports the screen's error against FINN's estimate on every candidate FINN estimated.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from flow.finn.folding import mvau_folding
from flow.models import Architecture
from flow.recipe.plan import CompressionPlan
from hw_models.boards import Board
from hw_models.cost import (
    Calibration,
    Layer,
    MvauLayer,
    PaddingLayer,
    SlidingWindowLayer,
    ThresholdingLayer,
    acc_bits_bound,
    dsp_type_of_part,
    estimate,
    layer_cycles,
)
from hw_models.folding import link_resources
from hw_models.resources import Resources, ResourceSource
from hw_models.rules import MIN_RTL_BITS, divisors

MVAU_WWIDTH_MAX = 36  # SetFolding's default cap on SIMD x weight bits


class HwFigures(BaseModel):
    """Resources and throughput of one design, from one source."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: ResourceSource
    resources: Resources
    cycles: int  # the slowest layer's cycles per frame
    fps: float
    bottleneck: str

    @property
    def lut_bram18(self) -> float:
        """LUTs + BRAM18s, the search's resource objective."""
        return self.resources.lut + self.resources.bram18


def plan_layers(arch: Architecture, plan: CompressionPlan, pixel_bits: int,
                part: str) -> list[Layer]:
    """The unfolded HW layers of a plan's network, in stream order."""
    in_ch, hw = arch.in_shape[0], arch.in_shape[1]
    dsp = dsp_type_of_part(part)
    bits = plan.input_bits
    chain: list[Layer] = [ThresholdingLayer(name="input.thr", channels=in_ch, vectors=hw * hw,
                                            input_bits=pixel_bits, output_bits=bits)]
    for spec, geo in zip(arch.layers, arch.geometry(plan)):
        lp = plan.layers[spec.name]
        if spec.kind == "conv":
            mw = geo.in_ch * spec.kernel ** 2
            if spec.padding:
                p = spec.padding
                chain.append(PaddingLayer(name=f"{spec.name}.pad", channels=geo.in_ch,
                                          img_dim=(hw, hw), padding=(p, p, p, p), input_bits=bits))
            if spec.kernel > 1 or spec.stride > 1:
                ifm = hw + 2 * spec.padding
                chain.append(SlidingWindowLayer(
                    name=f"{spec.name}.swg", channels=geo.in_ch, ifm_dim=(ifm, ifm),
                    ofm_dim=(geo.out_hw, geo.out_hw), kernel=(spec.kernel, spec.kernel),
                    stride=(spec.stride, spec.stride), input_bits=bits))
            vectors = geo.out_hw ** 2
        else:
            mw, vectors = geo.in_ch, 1
        acc = acc_bits_bound(mw, lp.weight_bits, bits, False)
        rtl = lp.weight_bits >= MIN_RTL_BITS and bits >= MIN_RTL_BITS
        chain.append(MvauLayer(name=f"{spec.name}.mvau", impl="rtl" if rtl else "hls", mw=mw,
                               mh=geo.out_ch, vectors=vectors, weight_bits=lp.weight_bits,
                               input_bits=bits, output_bits=acc, dsp_type=dsp))
        if lp.act_bits is not None:
            chain.append(ThresholdingLayer(name=f"{spec.name}.thr", channels=geo.out_ch,
                                           vectors=vectors, input_bits=acc,
                                           output_bits=lp.act_bits))
            bits = lp.act_bits
        hw = geo.out_hw
    return chain


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
    if isinstance(layer, SlidingWindowLayer):
        folded = _smallest(layer, "simd", layer.channels, target)
        if layer_cycles(folded) > target and not layer.depthwise:
            folded = folded.model_copy(update={"parallel_window": True})
        return folded
    if isinstance(layer, PaddingLayer):
        return _smallest(layer, "simd", layer.channels, target)
    if isinstance(layer, ThresholdingLayer):
        return _smallest(layer, "pe", layer.channels, target)
    return layer


def fold(chain: list[Layer], target_cycles: int) -> list[Layer]:
    """Each layer at the fewest lanes meeting the target; refolded at the reachable rate where
    a layer cannot meet it (SetFolding's two passes)."""
    for _ in range(2):
        folded: list[Layer] = []
        for layer in chain:
            folded.append(_fold_one(layer, target_cycles, folded[-1] if folded else None))
        reached = max(layer_cycles(x) for x in folded)
        if reached <= target_cycles:
            break
        target_cycles = reached
    return folded


def stream_widths(layer: Layer) -> tuple[int, int]:
    """(input, output) stream word widths in bits of a folded layer."""
    if isinstance(layer, MvauLayer):
        return layer.simd * layer.input_bits, layer.pe * layer.output_bits
    if isinstance(layer, ThresholdingLayer):
        return layer.pe * layer.input_bits, layer.pe * layer.output_bits
    if isinstance(layer, SlidingWindowLayer):
        window = layer.kernel[0] * layer.kernel[1] if layer.parallel_window else 1
        return layer.simd * layer.input_bits, layer.simd * layer.input_bits * window
    if isinstance(layer, PaddingLayer):
        return (layer.simd * layer.input_bits,) * 2
    raise TypeError(f"no stream widths for {layer.kind}")


def chain_figures(chain: list[Layer], clock_mhz: float, fifo_depth: int,
                  calibration: Calibration) -> HwFigures:
    """Cost-model resources (layers, width converters, FIFOs) and throughput of a folded chain."""
    widths = [stream_widths(x) for x in chain]
    parts = [estimate(x, calibration).resources for x in chain]
    parts += [link_resources(a[1], b[0], fifo_depth, calibration)
              for a, b in zip(widths, widths[1:])]
    parts += [link_resources(w, w, fifo_depth, calibration)
              for w in (widths[0][0], widths[-1][1])]
    slow = max(chain, key=layer_cycles)
    cycles = layer_cycles(slow)
    return HwFigures(source=ResourceSource.COST_MODEL,
                     resources=Resources.total(parts), cycles=cycles,
                     fps=clock_mhz * 1e6 / cycles, bottleneck=slow.name)


def screen(arch: Architecture, plan: CompressionPlan, pixel_bits: int, board: Board,
           target_fps: float, clock_mhz: float, fifo_depth: int,
           calibration: Calibration) -> HwFigures:
    """The cost model's figures of a plan's accelerator at the target frame rate."""
    target = max(1, int(clock_mhz * 1e6 / target_fps))
    chain = fold(plan_layers(arch, plan, pixel_bits, board.part), target)
    return chain_figures(chain, clock_mhz, fifo_depth, calibration)
