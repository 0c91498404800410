"""The cost model's typed layer descriptions: geometry, bit-widths, folding and memory style of
one FINN HW layer, never a FINN graph (`Layer`, discriminated by `kind`)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from hw_models.errors import HardwareError

DspType = Literal["DSP48E1", "DSP48E2", "DSP58"]
Impl = Literal["rtl", "hls"]


class CostModelError(HardwareError):
    """A layer the cost model cannot describe, or a calibration that cannot be used."""


# ----------------------------------------------------------------------------- layer descriptions


class _Layer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = ""
    impl: Impl = "rtl"

    @property
    def node_type(self) -> str:
        """FINN's op_type of this layer, e.g. MVAU_rtl."""
        return f"{self.kind}_{self.impl}"  # type: ignore[attr-defined]


class MvauLayer(_Layer):
    """Matrix-vector unit: MW inputs x MH outputs per vector, `vectors` vectors per frame."""

    kind: Literal["MVAU"] = "MVAU"
    mw: int = Field(ge=1)
    mh: int = Field(ge=1)
    simd: int = Field(default=1, ge=1)
    pe: int = Field(default=1, ge=1)
    vectors: int = Field(default=1, ge=1)
    weight_bits: int = Field(ge=1)
    input_bits: int = Field(ge=1)
    input_signed: bool = False
    output_bits: int = Field(default=32, ge=1)
    acc_bits: int | None = None  # None: the worst-case bound from MW and the bit-widths
    no_activation: bool = True
    mem_mode: str = "internal_decoupled"
    ram_style: str = "auto"
    ram_style_thresholds: str = "auto"
    res_type: Literal["lut", "dsp"] = "lut"  # HLS only; the RTL MVU always uses DSPs
    dsp_type: DspType = "DSP48E2"


class ThresholdingLayer(_Layer):
    """Multi-threshold activation: `channels` channels, (2^output_bits - 1) steps each."""

    kind: Literal["Thresholding"] = "Thresholding"
    channels: int = Field(ge=1)
    pe: int = Field(default=1, ge=1)
    vectors: int = Field(default=1, ge=1)
    input_bits: int = Field(ge=1)
    threshold_bits: int | None = None  # None: input_bits (FINN narrows it to the values)
    output_bits: int = Field(ge=1)
    num_steps: int | None = None  # None: 2^output_bits - 1
    ram_style: str = "distributed"


class SlidingWindowLayer(_Layer):
    """ConvolutionInputGenerator (sliding window): im2col of a KxK kernel over an image."""

    kind: Literal["ConvolutionInputGenerator"] = "ConvolutionInputGenerator"
    channels: int = Field(ge=1)
    ifm_dim: tuple[int, int]
    ofm_dim: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    simd: int = Field(default=1, ge=1)
    parallel_window: bool = False
    depthwise: bool = False
    input_bits: int = Field(ge=1)
    ram_style: str = "distributed"


class PaddingLayer(_Layer):
    """FMPadding: zero padding around an image."""

    kind: Literal["FMPadding"] = "FMPadding"
    channels: int = Field(ge=1)
    img_dim: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    simd: int = Field(default=1, ge=1)
    input_bits: int = Field(ge=1)
    batch: int = Field(default=1, ge=1)


class WidthConverterLayer(_Layer):
    """StreamingDataWidthConverter between two stream widths (bits)."""

    kind: Literal["StreamingDataWidthConverter"] = "StreamingDataWidthConverter"
    in_width: int = Field(ge=1)
    out_width: int = Field(ge=1)


class FifoLayer(_Layer):
    """StreamingFIFO of `depth` words of `width` bits."""

    kind: Literal["StreamingFIFO"] = "StreamingFIFO"
    depth: int = Field(ge=0)
    width: int = Field(ge=1)
    ram_style: str = "auto"


class VvauLayer(_Layer):
    """Vector-vector unit (depthwise convolution): each of `channels` channels takes the dot
    product of its k_h x k_w window with its own weights, at every one of `dim` output pixels."""

    kind: Literal["VVAU"] = "VVAU"
    channels: int = Field(ge=1)
    kernel: tuple[int, int]
    dim: tuple[int, int]  # output image (H, W)
    simd: int = Field(default=1, ge=1)  # window elements per cycle (divides k_h * k_w)
    pe: int = Field(default=1, ge=1)  # channels per cycle (divides channels)
    weight_bits: int = Field(ge=1)
    input_bits: int = Field(ge=1)
    input_signed: bool = False
    output_bits: int = Field(default=32, ge=1)
    acc_bits: int | None = None  # None: the worst-case bound from k_h * k_w and the bit-widths
    no_activation: bool = True
    mem_mode: str = "internal_decoupled"
    ram_style: str = "auto"
    res_type: Literal["auto", "lut", "dsp"] = "auto"
    dsp_type: DspType = "DSP58"


class PoolLayer(_Layer):
    """Pool (max, or the sum/average variants) over windows a depthwise sliding window delivers."""

    kind: Literal["Pool"] = "Pool"
    impl: Impl = "hls"
    channels: int = Field(ge=1)
    pe: int = Field(default=1, ge=1)
    kernel: int = Field(ge=1)  # window elements (K_h * K_w)
    out_pixels: int = Field(ge=1)
    batch: int = Field(default=1, ge=1)
    input_bits: int = Field(ge=1)
    output_bits: int | None = None  # None: input_bits (max pooling)
    acc_bits: int | None = None  # running value per lane (densiflow's RTL); None: output_bits
    function: str = "MaxPool"


class GlobalAccPoolLayer(_Layer):
    """GlobalAccPool: per-channel sum over all `vectors` pixels of an image (global pooling)."""

    kind: Literal["GlobalAccPool"] = "GlobalAccPool"
    channels: int = Field(ge=1)
    pe: int = Field(default=1, ge=1)
    vectors: int = Field(default=1, ge=1)  # input pixels per frame
    input_bits: int = Field(ge=1)
    output_bits: int = Field(ge=1)


class DuplicateStreamsLayer(_Layer):
    """DuplicateStreams: one stream copied to `outputs` streams (the fork of a residual block)."""

    kind: Literal["DuplicateStreams"] = "DuplicateStreams"
    channels: int = Field(ge=1)
    pe: int = Field(default=1, ge=1)
    vectors: int = Field(default=1, ge=1)
    outputs: int = Field(default=2, ge=2)
    input_bits: int = Field(ge=1)


class AddStreamsLayer(_Layer):
    """AddStreams: elementwise integer sum of two equal-shape streams (a residual add)."""

    kind: Literal["AddStreams"] = "AddStreams"
    channels: int = Field(ge=1)
    pe: int = Field(default=1, ge=1)
    vectors: int = Field(default=1, ge=1)
    input_bits: tuple[int, int]
    output_bits: int = Field(ge=1)


class LabelSelectLayer(_Layer):
    """LabelSelect (top-k of the logits)."""

    kind: Literal["LabelSelect"] = "LabelSelect"
    impl: Impl = "hls"
    labels: int = Field(ge=1)
    pe: int = Field(default=1, ge=1)
    input_bits: int = Field(ge=1)


class OtherLayer(_Layer):
    """A HW node the model has no terms for: its cycles are given, its resources counted as 0."""

    kind: Literal["Other"] = "Other"
    op_type: str
    cycles: int = Field(default=0, ge=0)

    @property
    def node_type(self) -> str:
        return self.op_type


Layer = Annotated[
    MvauLayer | VvauLayer | ThresholdingLayer | SlidingWindowLayer | PaddingLayer
    | WidthConverterLayer | FifoLayer | PoolLayer | GlobalAccPoolLayer | DuplicateStreamsLayer
    | AddStreamsLayer | LabelSelectLayer | OtherLayer,
    Field(discriminator="kind"),
]


# ----------------------------------------------------------------------------- geometry


def swg_buffer_depth(x: SlidingWindowLayer) -> int:
    """Depth of the RTL sliding window's buffer (finn ConvolutionInputGenerator_rtl)."""
    (kh, kw), (_, w), (sh, sw), (dh, dw) = x.kernel, x.ifm_dim, x.stride, x.dilation
    cf = x.channels // x.simd
    if swg_parallel(x):
        return ((kh - 1) * dh * w + (kw - 1) * dw) * cf + 2
    base = ((kh - 1) * dh * w + (kw - 1) * dw + 1) * cf
    return base + max(0, (sw - 1) - kh * kw) * cf + max(0, (sh - 1) * w - kh * kw) * cf


def swg_parallel(x: SlidingWindowLayer) -> bool:
    """Does the sliding window emit a whole window per cycle (parallel_window, or a 1x1 kernel)?"""
    return x.parallel_window or x.kernel == (1, 1)


def geometry_only(layer: Layer) -> Layer:
    """The layer as known before FINN sees the weights: worst-case accumulator and thresholds."""
    if isinstance(layer, (MvauLayer, VvauLayer)):
        return layer.model_copy(update={"acc_bits": None})
    if isinstance(layer, ThresholdingLayer):
        return layer.model_copy(update={"threshold_bits": None})
    return layer
