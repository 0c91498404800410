"""Cycles per frame of one cost-model layer: FINN's closed forms (`get_exp_cycles`), no fitting.

(hw_models.cycles turns per-layer cycles into a pipeline's throughput and latency.)
"""
from __future__ import annotations

from hw_models.cost.layers import (
    AddStreamsLayer,
    DuplicateStreamsLayer,
    GlobalAccPoolLayer,
    LabelSelectLayer,
    Layer,
    MvauLayer,
    OtherLayer,
    PaddingLayer,
    PoolLayer,
    SlidingWindowLayer,
    ThresholdingLayer,
    VvauLayer,
    swg_parallel,
)


def _mvau_cycles(x: MvauLayer) -> int:
    return (x.mh // x.pe) * (x.mw // x.simd) * x.vectors


def _vvau_cycles(x: VvauLayer) -> int:
    k = x.kernel[0] * x.kernel[1]
    return (x.channels // x.pe) * (k // x.simd) * x.dim[0] * x.dim[1]


def _swg_cycles(x: SlidingWindowLayer) -> int:
    (kh, kw), (ih, iw), (oh, ow), (sh, sw), (dh, dw) = (
        x.kernel, x.ifm_dim, x.ofm_dim, x.stride, x.dilation)
    cf = x.channels // x.simd
    if swg_parallel(x):
        return ih * iw * cf + 2
    if ih == 1 or iw == 1:  # 1D: normalise to a row
        k, o, i, s = kh * kw, oh * ow, ih * iw, max(sh, sw)
        if x.depthwise:
            return max(o * k * cf + (cf - 1) * k, i * cf + cf * (k - 1) * (s - 1)) + 2
        return o * k * cf + 2
    buffer_min = ((kh - 1) * dh * iw + (kw - 1) * dw + 1) * cf
    per_row = max(ow * kw * kh * cf, sw * iw * cf)
    if x.depthwise:
        per_row += ow * (sw - 1) * (cf - 1)
    cycles = buffer_min + oh * per_row
    return cycles + ((sh - 1) * iw * cf if x.depthwise else 0)


def layer_cycles(layer: Layer) -> int:
    """Expected cycles per frame of one layer (FINN's get_exp_cycles formulas)."""
    x = layer
    if isinstance(x, MvauLayer):
        return _mvau_cycles(x)
    if isinstance(x, VvauLayer):
        return _vvau_cycles(x)
    if isinstance(x, (ThresholdingLayer, DuplicateStreamsLayer, AddStreamsLayer)):
        return (x.channels // x.pe) * x.vectors
    if isinstance(x, GlobalAccPoolLayer):
        # FINN's HLS sends the sums after the last pixel (one word per fold); densiflow's RTL
        # sends them while the last pixel streams in
        return (x.channels // x.pe) * (x.vectors + (x.impl == "hls"))
    if isinstance(x, SlidingWindowLayer):
        return _swg_cycles(x)
    if isinstance(x, PaddingLayer):
        top, left, bottom, right = x.padding
        return ((x.channels // x.simd) * x.batch * (x.img_dim[0] + top + bottom)
                * (x.img_dim[1] + left + right))
    if isinstance(x, PoolLayer):
        return (x.channels * x.kernel // x.pe) * x.out_pixels * x.batch
    if isinstance(x, LabelSelectLayer):
        return x.labels // x.pe
    if isinstance(x, OtherLayer):
        return x.cycles
    return 0  # width converters and FIFOs: FINN counts no cycles
