"""Analytic cost model: LUT / BRAM18 / URAM / DSP and cycles per frame of FINN HW layers.

A layer is described by typed data (geometry, bit-widths, folding, memory style), never by a FINN
graph, so one estimate takes microseconds. Each resource is a linear combination of structural
*terms* of the layer (multiplier lanes, adder-tree bits, memory tiles of a ladder, stream widths):

    resource(layer) = sum_t  c[node_type][resource][t] * term_t(layer)

The terms are closed forms from the layer's geometry (those FINN-R, FINN's estimators and the RTL
library are built from); the coefficients `c` are data, fitted by `fit_calibration` to samples of
one `ResourceSource` (FINN's estimate, Yosys synthesis, ...) and stored as JSON under
`hw_models/calibration/` (`python -m hw_models.calibrate` regenerates FINN's). Cycles per frame are
FINN's closed forms (`get_exp_cycles`) and need no fitting.

`model_cost` costs every HW node of a FINN dataflow model with this model; `compare_with_finn`
reports its error against FINN's own estimate of the same nodes (median and worst per resource).
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from statistics import median
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from hw_models.errors import HardwareError
from hw_models.resources import BUDGETED, Resources, ResourceSource

CALIBRATION_DIR = Path(__file__).parent / "calibration"
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


class PoolLayer(_Layer):
    """Pool (max/avg) over windows delivered by a depthwise sliding window (HLS)."""

    kind: Literal["Pool"] = "Pool"
    impl: Impl = "hls"
    channels: int = Field(ge=1)
    pe: int = Field(default=1, ge=1)
    kernel: int = Field(ge=1)  # window elements (K_h * K_w)
    out_pixels: int = Field(ge=1)
    batch: int = Field(default=1, ge=1)
    input_bits: int = Field(ge=1)


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
    MvauLayer | ThresholdingLayer | SlidingWindowLayer | PaddingLayer | WidthConverterLayer
    | FifoLayer | PoolLayer | LabelSelectLayer | OtherLayer,
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------- cycles (FINN's closed forms)


def _mvau_cycles(x: MvauLayer) -> int:
    return (x.mh // x.pe) * (x.mw // x.simd) * x.vectors


def _swg_buffer_depth(x: SlidingWindowLayer) -> int:
    """Depth of the RTL sliding window's buffer (finn ConvolutionInputGenerator_rtl)."""
    (kh, kw), (_, w), (sh, sw), (dh, dw) = x.kernel, x.ifm_dim, x.stride, x.dilation
    cf = x.channels // x.simd
    if _swg_parallel(x):
        return ((kh - 1) * dh * w + (kw - 1) * dw) * cf + 2
    base = ((kh - 1) * dh * w + (kw - 1) * dw + 1) * cf
    return base + max(0, (sw - 1) - kh * kw) * cf + max(0, (sh - 1) * w - kh * kw) * cf


def _swg_parallel(x: SlidingWindowLayer) -> bool:
    return x.parallel_window or x.kernel == (1, 1)


def _swg_cycles(x: SlidingWindowLayer) -> int:
    (kh, kw), (ih, iw), (oh, ow), (sh, sw), (dh, dw) = (
        x.kernel, x.ifm_dim, x.ofm_dim, x.stride, x.dilation)
    cf = x.channels // x.simd
    if _swg_parallel(x):
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
    if isinstance(x, ThresholdingLayer):
        return (x.channels // x.pe) * x.vectors
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


# ----------------------------------------------------------------------------- memory ladders


def _bram18_weights(depth: float, width: int) -> int:
    """BRAM18s of a depth x width memory in SDP mode (FINN-R's ladder, UG573 table 1-10)."""
    if width == 1:
        return math.ceil(depth / 16384)
    if width == 2:
        return math.ceil(depth / 8192)
    if width <= 4:
        return math.ceil(depth / 4096) * math.ceil(width / 4)
    if width <= 9:
        return math.ceil(depth / 2048) * math.ceil(width / 9)
    if width <= 18 or depth > 512:
        return math.ceil(depth / 1024) * math.ceil(width / 18)
    return math.ceil(depth / 512) * math.ceil(width / 36)


def _uram(depth: float, width: int) -> int:
    """URAM288s (72 x 4096) of a depth x width memory."""
    return math.ceil(width / 72) * math.ceil(depth / 4096)


def _bram18_buffer(depth: int, width: int) -> int:
    """BRAM18s of a sliding-window line buffer (aspect ratio picked by depth, cascaded)."""
    def aspect(d: int) -> int:
        for limit, w in ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2)):
            if d <= limit:
                return w
        return 1

    cascade_depth = math.ceil(depth / 16384)
    cascade_width = math.ceil(width / aspect(depth))
    savings = 0
    if depth > 16384:
        savings = cascade_width - math.ceil(width / aspect(depth % 16384))
    return cascade_depth * cascade_width - savings


# Yosys' memory mapping (memory_libmap with synth_xilinx's libraries lutrams_xc5v.txt and
# brams_xc4v.txt): a simple-dual-port LUTRAM unit (RAM32M: 32 x 6, RAM64M: 64 x 3, 4 LUTs each)
# costs 8, a RAMB18 129 (a RAMB36 257); it takes the cheaper unless the memory asks for a style.
# Only the sliding window asks in a way Yosys reads (`ram_style`); the upper-case RAM_STYLE of
# memstream, fifo.sv and thresholding.sv is not honoured (seen: a 256 x 64 MVAU weight memory
# asking for "distributed" and a 256 x 32 FIFO memory both went to BRAM).
YOSYS_LUTRAM_UNIT_COST, YOSYS_BRAM18_COST, LUTS_PER_LUTRAM_UNIT = 8, 129, 4


def yosys_memory(depth: float, width: int, ram_style: str = "auto") -> tuple[float, float]:
    """(LUTs used as LUTRAM, BRAM18s) Yosys maps a depth x width memory to (by its costs,
    unless `ram_style` it honours is "distributed" or "block"/"ultra")."""
    if depth < 1 or width < 1:
        return 0.0, 0.0
    units = math.ceil(width / 6) if depth <= 32 else math.ceil(depth / 64) * math.ceil(width / 3)
    bram = _bram18_weights(depth, width)
    lutram = ram_style == "distributed" or (
        ram_style not in ("block", "ultra")
        and YOSYS_LUTRAM_UNIT_COST * units <= YOSYS_BRAM18_COST * bram)
    return (float(LUTS_PER_LUTRAM_UNIT * units), 0.0) if lutram else (0.0, float(bram))


# Versal-style primitive table FINN's RTL thresholding sizes its memories with (min waste wins).
_THRESHOLD_PRIMITIVES = (("uram", 72, 4096), ("uram", 36, 8192), ("uram", 18, 16384),
                         ("uram", 9, 32768), ("bram18", 36, 512), ("bram18", 18, 1024),
                         ("bram18", 9, 2048), ("lutram", 1, 64))


@lru_cache(maxsize=4096)
def _threshold_memory(width: int, depth: float) -> tuple[str, int]:
    """Primitive kind and count holding a width x depth threshold memory with least waste."""
    best = None
    for kind, pw, pd in _THRESHOLD_PRIMITIVES:
        count = math.ceil(width / pw) * math.ceil(depth / pd)
        waste = count * pw * pd - width * depth
        if best is None or waste < best[0]:
            best = (waste, kind, count)
    return best[1], best[2]


# ----------------------------------------------------------------------------- terms per layer kind

Terms = dict[str, dict[str, float]]  # resource -> term name -> value


def acc_bits_bound(mw: int, weight_bits: int, input_bits: int, input_signed: bool) -> int:
    """Worst-case accumulator bits of a MW-long dot product (arXiv 2301.13376, as FINN uses)."""
    alpha = math.log2(mw) + weight_bits + input_bits - 1 - int(input_signed)
    return math.ceil(alpha + math.log2(1 + 2 ** -alpha) + 1)


def _mvau_acc_bits(x: MvauLayer) -> int:
    bound = acc_bits_bound(x.mw, x.weight_bits, x.input_bits, x.input_signed)
    return bound if x.acc_bits is None else min(x.acc_bits, bound)


def _mvau_weight_memory(x: MvauLayer) -> tuple[float, float]:
    """(BRAM18, URAM) of the weight memory as FINN sizes it (its mem_mode / ram_style rules)."""
    depth, width = x.mw * x.mh / (x.simd * x.pe), x.simd * x.pe * x.weight_bits
    if x.mem_mode in ("external", "external_mem") or (
            x.mem_mode == "internal_embedded" and depth <= 128):
        return 0.0, 0.0
    decoupled = x.mem_mode == "internal_decoupled"
    bram = 0 if decoupled and x.ram_style in ("distributed", "ultra") else _bram18_weights(
        depth, width)
    uram = 0 if decoupled and x.ram_style != "ultra" else _uram(depth, width)
    return float(bram), float(uram)


def _mvau_yosys_weights(x: MvauLayer) -> tuple[float, float]:
    """(LUTRAM LUTs, BRAM18s) of an RTL MVAU's weight memory (memstream) as Yosys maps it."""
    if x.impl != "rtl" or x.mem_mode != "internal_decoupled":
        return 0.0, 0.0
    return yosys_memory(x.mw * x.mh / (x.simd * x.pe), x.simd * x.pe * x.weight_bits)


def mvu_dsp_lanes(x: MvauLayer) -> int:
    """DSP slices finn-rtllib's mvu.sv instantiates: SIMD x ceil(PE / NUM_LANES) on DSP48E1/E2,
    NUM_LANES weights packed into the A_WIDTH-bit A:D path (25 / 27 bits; narrow-range weights,
    which the RTL MVAU needs on DSP48E1); PE x ceil(SIMD / 3) on DSP58."""
    if x.dsp_type == "DSP58":
        return x.pe * math.ceil(x.simd / 3)
    a_width, w = (25 if x.dsp_type == "DSP48E1" else 27), x.weight_bits
    lanes = 1 if a_width == w else 1 + (a_width - w) // (w + x.input_bits - 1)
    return x.simd * math.ceil(x.pe / lanes)


def _mvau_terms(x: MvauLayer) -> Terms:
    p, q, w, a = x.pe, x.simd, x.weight_bits, x.input_bits
    acc, wmem, tmem = _mvau_acc_bits(x), x.mw * x.mh // (p * q), x.mh // p
    lut_weights = (x.mem_mode == "internal_decoupled" and x.ram_style == "distributed") or (
        x.mem_mode == "internal_embedded" and wmem <= 128)
    lut_mult = x.impl == "hls" and x.res_type == "lut"
    thr = not x.no_activation and x.ram_style_thresholds == "distributed"
    levels = 2 ** x.output_bits - 1
    bram, uram = _mvau_weight_memory(x)
    y_lutram, y_bram = _mvau_yosys_weights(x)
    lanes = float(mvu_dsp_lanes(x)) if x.impl == "rtl" else 0.0  # DSPs mvu.sv instantiates
    if x.impl == "rtl":
        dsp = p * math.ceil(q / 3) if x.dsp_type == "DSP58" else math.ceil(p / 4) * q
    else:
        dsp = 0 if lut_mult else p * q * math.ceil((w + a) / 48)
    return {
        "lut": {
            "const": 1.0,
            "mult": p * q * (2 * math.ceil((w + a) / 6) - 1) * (w + a) if lut_mult else 0.0,
            "adder_tree": p * (w + a) * (2 * q - 1),
            "accumulator": p * acc,
            "thresholds": p * levels * acc * math.ceil(tmem / 64) if thr else 0.0,
            "comparators": p * levels * acc if thr else 0.0,
            "weights_lutram": p * q * w * math.ceil(wmem / 64) if lut_weights else 0.0,
            "weight_width": float(p * q * w),  # the weight stream's registers and muxes
            "lane_sums": float(p * q * acc),  # per SIMD column and PE lane, in the fabric
            "yosys_weights_lutram": y_lutram,
            "dsp_slices": lanes,  # the fabric logic around each DSP lane
        },
        "bram18": {"weights": bram, "yosys_weights": y_bram},
        "uram": {"weights": uram},
        "dsp": {"multipliers": float(dsp), "mvu_lanes": lanes},
    }


def yosys_threshold_rom(depth: float, width: int) -> tuple[float, float]:
    """(LUTs, BRAM18s) of one stage's threshold memory in synthesis: its constants become a ROM,
    in LUT6s (64 entries per bit), or in block RAM from a RAMB18's 512 x 18 bits on (seen in Yosys
    0.70: 512 x 21 bits in BRAM, 512 x 11 in LUTs)."""
    if depth * width >= 512 * 18:
        return 0.0, float(_bram18_weights(depth, width))
    return float(width * math.ceil(depth / 64)), 0.0


def _thresholding_terms(x: ThresholdingLayer) -> Terms:
    cf, tbits = x.channels / x.pe, x.threshold_bits or x.input_bits
    steps = x.num_steps if x.num_steps is not None else 2 ** x.output_bits - 1
    mem = {"lutram": 0.0, "bram18": 0.0, "uram": 0.0}
    hls_lut = {"comparators": 0.0, "lutram": 0.0}
    yosys = {"rom": 0.0, "bram18": 0.0}
    if x.impl == "rtl":
        for level in range(x.output_bits):
            kind, count = _threshold_memory(tbits, cf * 2 ** level)
            mem[kind] += x.pe * count
            rom, bram = yosys_threshold_rom(cf * 2 ** level, tbits)
            yosys["rom"] += x.pe * rom
            yosys["bram18"] += x.pe * bram
    else:
        width, tmem = x.pe * tbits * steps, x.channels // x.pe
        hls_lut["comparators"] = x.input_bits * x.pe
        if tmem > 1 and x.ram_style == "distributed":
            hls_lut["lutram"] = width * math.ceil(tmem / 64)
        if tmem > 1 and x.ram_style == "block":
            mem["bram18"] = math.ceil(width / 16) * math.ceil(tmem / 1024)
        if tmem > 1 and x.ram_style == "ultra":
            mem["uram"] = math.ceil(width / 72) * math.ceil(tmem / 4096)
    return {
        "lut": {"const": 1.0, "threshold_lutram": mem["lutram"] + hls_lut["lutram"],
                "comparators": hls_lut["comparators"] or x.pe * x.input_bits,
                "threshold_bits": x.channels * steps * tbits,
                # the binary-search pipeline: one tbits comparison per output bit and lane
                "stage_bits": float(x.pe * x.output_bits * tbits) if x.impl == "rtl" else 0.0,
                "threshold_rom": yosys["rom"]},
        "bram18": {"thresholds": mem["bram18"], "yosys_thresholds": yosys["bram18"]},
        "uram": {"thresholds": mem["uram"]},
        "dsp": {},
    }


def _swg_terms(x: SlidingWindowLayer) -> Terms:
    width, depth = x.simd * x.input_bits, _swg_buffer_depth(x)
    parallel_2d = _swg_parallel(x) and 1 not in x.ifm_dim
    if _swg_parallel(x):
        kw = (x.kernel[1] - 1) * x.dilation[1] + 1
        mem_depth = (x.ifm_dim[1] - kw) + x.ifm_dim[1] * (x.dilation[0] - 1)
        count = x.kernel[0] - 1 if parallel_2d else 0
    else:
        mem_depth, count = depth, 1
    bram = _bram18_buffer(mem_depth, width) * count if x.ram_style in ("block", "auto") else 0
    uram = _uram(mem_depth, width) * count if x.ram_style == "ultra" else 0
    out_width = width * (x.kernel[0] * x.kernel[1] if x.parallel_window else 1)
    y_lutram, y_bram = yosys_memory(mem_depth, width, x.ram_style)
    return {
        "lut": {"const": 1.0,
                "buffer_lutram": width * math.ceil(depth / 38) if x.ram_style == "distributed"
                else 0.0,
                "out_width": float(out_width),
                "yosys_buffer_lutram": y_lutram * count,
                # the address generator's loop counters (image, kernel, channel folds, buffer)
                "counter_bits": float(sum(_clog2(v) for v in (
                    *x.ifm_dim, *x.kernel, x.channels // x.simd, depth)))},
        "bram18": {"buffer": float(bram), "yosys_buffer": y_bram * count},
        "uram": {"buffer": float(uram)},
        "dsp": {},
    }


def vpc_structure(in_width: int, out_width: int) -> tuple[str, int, int]:
    """(branch, PI0, PO0) of finn-rtllib's vpc as dwc_axi instantiates it.

    dwc_axi passes W=1, N=IBITS*OBITS, PI=IBITS, PO=OBITS, so after dividing out g = gcd(IBITS,
    OBITS) the vector is N0 = lcm(IBITS, OBITS) words of g bits, PI0 = IBITS/g words in and
    PO0 = OBITS/g out per beat. Its pure serialiser (PO0 == 1, N0 <= PI0) and deserialiser
    (PI0 == 1, N0 <= PO0) then only apply to 1-bit streams: every other converter, integer
    ratios included, takes the "generic" branch (a PI0+PO0-word buffer and, where PO0 is not a
    multiple of PI0, a PI0-way barrel rotator of the input words).
    """
    g = math.gcd(in_width, out_width)
    pi0, po0 = in_width // g, out_width // g
    n0 = in_width * out_width // g
    if pi0 == po0 == 1:
        return "wire", pi0, po0
    if po0 == 1 and n0 <= pi0:
        return "serialise", pi0, po0
    if pi0 == 1 and n0 <= po0:
        return "deserialise", pi0, po0
    return "generic", pi0, po0


def _dwc_terms(x: WidthConverterLayer) -> Terms:
    inw, outw = x.in_width, x.out_width
    lcm = inw * outw // math.gcd(inw, outw)
    finn = 0.0
    if inw != lcm:
        finn += abs(math.ceil(math.log2(inw / lcm))) + lcm
    if lcm != outw:
        finn += abs(math.ceil(math.log2(lcm / outw))) + outw
    branch, pi0, po0 = vpc_structure(inw, outw)
    generic = branch == "generic"
    rotating = generic and pi0 > 1 and po0 % pi0 != 0
    return {
        "lut": {"const": 1.0 if branch != "wire" else 0.0, "finn": finn,
                # registers of the generic buffer: PI0+PO0 words of g bits
                "buffer_bits": float(inw + outw) if generic else float(lcm * (branch != "wire")),
                # barrel rotator: PI0 positions x g bits, each selecting one of PI0 words by a
                # rotation count (a shifter of log2(PI0) stages per bit, as Yosys builds it)
                "barrel": inw * math.log2(pi0) if rotating else 0.0,
                "barrel_bits": float(inw) if rotating else 0.0},
        "bram18": {}, "uram": {}, "dsp": {},
    }


def _clog2(x: int) -> int:
    return max(x - 1, 0).bit_length()


def _fifo_style(depth: int, width: int, requested: str) -> str:
    """Storage fifo.sv elaborates (FINN's RAM_STYLE_EFF ladder)."""
    if depth <= 33:
        return "srl"
    if requested != "auto":
        return requested
    if depth <= 64 and width < 12:
        return "srl"
    if depth <= 257 or width < 5:
        return "distributed"
    return "block" if depth <= 2028 else "ultra"


def _fifo_terms(x: FifoLayer) -> Terms:
    depth, width = x.depth, x.width
    terms: Terms = {"lut": {"const": 0.0, "storage": 0.0, "control": 0.0, "width": 0.0,
                            "srl_bits": 0.0, "yosys_lutram": 0.0, "memory_control": 0.0},
                    "bram18": {"storage": 0.0, "yosys_storage": 0.0}, "uram": {"storage": 0.0},
                    "dsp": {}}
    if depth < 2:
        return terms
    style, cw = _fifo_style(depth, width, x.ram_style), _clog2(depth + 1) + 1
    lut = terms["lut"]
    lut["const"], lut["width"] = 1.0, float(width)
    if style == "srl":  # one SRLC32E per 32 words of each bit (the output register holds one)
        lut["storage"] = lut["srl_bits"] = math.ceil((depth - 1 if depth > 4 else 4) / 32) * width
        lut["control"] = 5 * cw - 7
        return terms
    # a memory Yosys maps by its costs (fifo.sv's RAM_STYLE is not honoured)
    lut["yosys_lutram"], terms["bram18"]["yosys_storage"] = yosys_memory(depth, width)
    lut["memory_control"] = float(cw)
    if style == "distributed":
        rows = 2 ** _clog2(depth - 1)
        lut["storage"] = math.ceil(rows / 32) * math.ceil(width / 2) * 5 // 4
        lut["storage"] += rows // 128 * (width // 2)
        lut["control"] = 8 * cw - 15
    elif style == "block":
        tiles = _bram18_weights(depth, width)
        terms["bram18"]["storage"] = float(tiles)
        lut["control"] = 54 + 3 * math.ceil(depth / 16384) + 2 * tiles // 5
    else:
        tiles = _uram(depth, width)
        terms["uram"]["storage"] = float(tiles)
        lut["control"] = 6 * cw + width
    return terms


def _padding_terms(x: PaddingLayer) -> Terms:
    return {"lut": {"const": 1.0, "width": float(x.simd * x.input_bits)},
            "bram18": {}, "uram": {}, "dsp": {}}


def _stream_terms(width: int) -> Terms:
    return {"lut": {"const": 1.0, "width": float(width)}, "bram18": {}, "uram": {}, "dsp": {}}


def layer_terms(layer: Layer) -> Terms:
    """The structural terms of one layer, per resource."""
    x = layer
    if isinstance(x, MvauLayer):
        return _mvau_terms(x)
    if isinstance(x, ThresholdingLayer):
        return _thresholding_terms(x)
    if isinstance(x, SlidingWindowLayer):
        return _swg_terms(x)
    if isinstance(x, WidthConverterLayer):
        return _dwc_terms(x)
    if isinstance(x, FifoLayer):
        return _fifo_terms(x)
    if isinstance(x, PaddingLayer):
        return _padding_terms(x)
    if isinstance(x, PoolLayer):
        return _stream_terms(x.pe * x.input_bits)
    if isinstance(x, LabelSelectLayer):
        return _stream_terms(x.pe * x.input_bits)
    return {"lut": {}, "bram18": {}, "uram": {}, "dsp": {}}


# ----------------------------------------------------------------------------- calibration


class TermFitError(BaseModel):
    """How well one node type's fitted resource reproduces its calibration samples."""

    model_config = ConfigDict(frozen=True)

    samples: int
    median_rel_error: float
    worst_rel_error: float


class Calibration(BaseModel):
    """Fitted coefficients of the terms, per node type and resource, from one source of figures."""

    model_config = ConfigDict(frozen=True)

    source: ResourceSource
    family: str = "any"  # Yosys family (xc7 / xcup) the samples came from, or "any"
    description: str = ""
    coefficients: dict[str, dict[str, dict[str, float]]]  # node type -> resource -> term -> c
    fit: dict[str, dict[str, TermFitError]] = {}  # node type -> resource -> error on samples
    held_out: dict[str, dict[str, TermFitError]] = {}  # leave-one-out error, where measured

    def save(self, path: Path | str) -> Path:
        """Write the calibration as JSON."""
        Path(path).write_text(json.dumps(self.model_dump(mode="json"), indent=1) + "\n")
        return Path(path)

    def covering(self, fallback: Calibration) -> Calibration:
        """This calibration with `fallback`'s coefficients for the node types it lacks."""
        missing = sorted(set(fallback.coefficients) - set(self.coefficients))
        if not missing:
            return self
        note = (f" Node types without samples ({', '.join(missing)}) use the "
                f"{fallback.source.label} calibration.")
        return self.model_copy(update={
            "coefficients": {**{k: fallback.coefficients[k] for k in missing},
                             **self.coefficients},
            "description": self.description + note})

    def digest(self) -> str:
        """Hash of the coefficients (what changes the estimates)."""
        import hashlib

        text = json.dumps([self.source.value, self.family, self.coefficients], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def load(cls, path: Path | str) -> Calibration:
        """Read a calibration JSON file."""
        try:
            return cls.model_validate_json(Path(path).read_text())
        except FileNotFoundError:
            raise CostModelError(f"calibration file {path} not found; regenerate it with "
                                 "`python -m hw_models.calibrate`") from None


def calibration_path(source: ResourceSource, family: str = "any") -> Path:
    """Where the calibration for `source` (and Yosys family) is stored."""
    suffix = "" if family == "any" else f"_{family}"
    return CALIBRATION_DIR / f"{source.value}{suffix}.json"


@lru_cache(maxsize=8)
def load_calibration(source: ResourceSource = ResourceSource.FINN_ESTIMATE,
                     family: str = "any") -> Calibration:
    """The stored calibration for `source` (FINN's estimate by default)."""
    return Calibration.load(calibration_path(source, family))


def synthesis_calibration(family: str) -> Calibration | None:
    """The Yosys calibration of a family, FINN's estimate's coefficients filling in the node
    types it has no samples of (HLS layers Yosys cannot synthesise); None if not calibrated."""
    if not calibration_path(ResourceSource.YOSYS, family).is_file():
        return None
    return load_calibration(ResourceSource.YOSYS, family).covering(load_calibration())


def board_calibration(family: str, source: ResourceSource | None = None) -> Calibration:
    """The calibration costing a design for a board family: `source`'s, else Yosys' where the
    family is calibrated (what synthesis counts), else FINN's estimate."""
    if source in (None, ResourceSource.YOSYS):
        cal = synthesis_calibration(family)
        if cal is not None:
            return cal
        if source is not None:
            raise CostModelError(f"no Yosys calibration for family {family!r}; generate it with "
                                 f"`python -m hw_models.calibrate --source yosys --family "
                                 f"{family}`")
    if source not in (None, ResourceSource.FINN_ESTIMATE):
        raise CostModelError(f"no calibration source {source.value!r}; use finn_estimate or "
                             "yosys")
    return load_calibration()


class CalibrationSample(BaseModel):
    """One layer and the resources one source gave it."""

    model_config = ConfigDict(frozen=True)

    layer: Layer
    resources: Resources
    source: ResourceSource


# Terms that model one source's figures and not the other's; a fit to one source leaves the
# other's out (FINN's own formulas vs the structure of the synthesised RTL).
FINN_TERMS = frozenset({
    "finn", "mult", "adder_tree", "thresholds", "weights_lutram", "threshold_lutram",
    "threshold_bits", "buffer_lutram", "storage", "control", "weights", "buffer", "multipliers"})
SYNTHESIS_TERMS = frozenset({
    "buffer_bits", "barrel", "barrel_bits", "weight_width", "lane_sums", "yosys_weights_lutram",
    "yosys_weights", "mvu_lanes", "dsp_slices", "stage_bits", "threshold_rom", "yosys_lutram",
    "yosys_thresholds", "yosys_buffer_lutram", "yosys_buffer", "counter_bits", "srl_bits",
    "yosys_storage", "memory_control"})


def _foreign_terms(source: ResourceSource) -> frozenset[str]:
    """The terms a fit to `source` leaves out."""
    return FINN_TERMS if source in (ResourceSource.YOSYS, ResourceSource.VIVADO) else (
        SYNTHESIS_TERMS)


def _rel_error(model: float, ref: float) -> float:
    """|model - ref| / ref; where ref is 0: 0 if model is (near) 0, else the absolute error."""
    if ref == 0:
        return 0.0 if abs(model) < 0.5 else abs(model)
    return abs(model - ref) / abs(ref)


def _fit_terms(rows: Sequence[dict[str, float]], targets: Sequence[float]) -> dict[str, float]:
    """Non-negative least squares of targets on the terms, relative error weighted."""
    import numpy as np
    from scipy.optimize import nnls

    names = sorted({k for r in rows for k, v in r.items() if v})
    if not names:
        return {}
    x = np.array([[r.get(k, 0.0) for k in names] for r in rows], dtype=float)
    y = np.asarray(targets, dtype=float)
    weight = 1.0 / np.maximum(np.abs(y), 1.0)  # relative error, as the goal is stated
    coef, _ = nnls(x * weight[:, None], y * weight)
    return {k: float(round(c, 6)) for k, c in zip(names, coef) if c > 1e-9}


def _error_stats(got: Sequence[float], ref: Sequence[float]) -> TermFitError:
    errs = [_rel_error(g, r) for g, r in zip(got, ref)]
    return TermFitError(samples=len(errs), median_rel_error=median(errs),
                        worst_rel_error=max(errs))


def _held_out(terms: Sequence[dict[str, float]], ref: Sequence[float]) -> TermFitError:
    """Leave-one-out: each sample predicted by the coefficients fitted to the others."""
    got = []
    for i in range(len(ref)):
        rest = [j for j in range(len(ref)) if j != i]
        coef = _fit_terms([terms[j] for j in rest], [ref[j] for j in rest])
        got.append(max(0.0, _apply(coef, terms[i])))
    return _error_stats(got, ref)


def fit_calibration(samples: Iterable[CalibrationSample], description: str = "",
                    family: str = "any", held_out: bool = False) -> Calibration:
    """Fit the coefficients of every node type and resource to the samples (one source).

    `held_out` also measures each node type's leave-one-out error (each sample predicted by a fit
    to the others of its type), the error to expect on nodes the fit has not seen.
    """
    groups: dict[str, list[CalibrationSample]] = {}
    for s in samples:
        groups.setdefault(s.layer.node_type, []).append(s)
    sources = {s.source for g in groups.values() for s in g}
    if len(sources) != 1:
        raise CostModelError(f"calibration samples must come from one source, got {sources}")
    coefficients: dict[str, dict[str, dict[str, float]]] = {}
    fit: dict[str, dict[str, TermFitError]] = {}
    loo: dict[str, dict[str, TermFitError]] = {}
    source = next(iter(sources))
    foreign = _foreign_terms(source)
    for node_type, group in sorted(groups.items()):
        terms = [layer_terms(s.layer) for s in group]
        coefficients[node_type], fit[node_type] = {}, {}
        for res in BUDGETED:
            ref = [s.resources.get(res) for s in group]
            rows = [{k: v for k, v in t[res].items() if k not in foreign} for t in terms]
            coefficients[node_type][res] = _fit_terms(rows, ref)
            fit[node_type][res] = _error_stats(
                [_apply(coefficients[node_type][res], r) for r in rows], ref)
            if held_out and len(group) > 1:
                loo.setdefault(node_type, {})[res] = _held_out(rows, ref)
    return Calibration(source=source, family=family, description=description,
                       coefficients=coefficients, fit=fit, held_out=loo)


def _apply(coef: dict[str, float], terms: dict[str, float]) -> float:
    return sum(c * terms.get(k, 0.0) for k, c in coef.items())


# ----------------------------------------------------------------------------- estimates


class LayerCost(BaseModel):
    """The cost model's estimate of one layer."""

    model_config = ConfigDict(frozen=True)

    name: str
    node_type: str
    resources: Resources
    cycles: int


def estimate(layer: Layer, calibration: Calibration | None = None) -> LayerCost:
    """Resources (source: cost model) and cycles per frame of one layer."""
    cal = calibration or load_calibration()
    coef = cal.coefficients.get(layer.node_type, {})
    terms = layer_terms(layer)
    values = {res: max(0.0, _apply(coef.get(res, {}), terms.get(res, {}))) for res in BUDGETED}
    values = {k: float(round(v)) for k, v in values.items()}  # FINN counts whole units
    return LayerCost(name=layer.name, node_type=layer.node_type, resources=Resources(**values),
                     cycles=layer_cycles(layer))


def estimate_resources(layer: Layer, calibration: Calibration | None = None) -> Resources:
    """Resources of one layer (the cost model's)."""
    return estimate(layer, calibration).resources


# ----------------------------------------------------------------------------- FINN nodes -> layers


def dsp_type_of_part(part: str) -> DspType:
    """DSP block of an AMD part, as FINN decides it (Versal: DSP58; xc7: DSP48E1)."""
    p = part.lower()
    if p.startswith(("xcv", "xqv")) and not p.startswith("xcvu"):
        return "DSP58"
    return "DSP48E1" if p[2:3] == "7" else "DSP48E2"


def _bits(inst, attr: str) -> int:
    from qonnx.core.datatype import DataType

    return DataType[inst.get_nodeattr(attr)].bitwidth()


def _signed(inst, attr: str) -> bool:
    from qonnx.core.datatype import DataType

    return DataType[inst.get_nodeattr(attr)].signed()


def _impl(op_type: str) -> Impl:
    return "hls" if op_type.endswith("_hls") else "rtl"


def _mvau_layer(node, inst, part: str) -> MvauLayer:
    import numpy as np

    g = inst.get_nodeattr
    return MvauLayer(
        name=node.name, impl=_impl(node.op_type), mw=g("MW"), mh=g("MH"), simd=g("SIMD"),
        pe=g("PE"), vectors=int(np.prod(g("numInputVectors"))),
        weight_bits=_bits(inst, "weightDataType"), input_bits=_bits(inst, "inputDataType"),
        input_signed=_signed(inst, "inputDataType"), output_bits=_bits(inst, "outputDataType"),
        acc_bits=_bits(inst, "accDataType"), no_activation=bool(g("noActivation")),
        mem_mode=g("mem_mode"), ram_style=g("ram_style"),
        ram_style_thresholds=g("ram_style_thresholds"),
        res_type=g("resType") if g("resType") in ("lut", "dsp") else "lut",
        dsp_type=dsp_type_of_part(part))


def _thresholding_layer(node, inst, part: str) -> ThresholdingLayer:
    import numpy as np

    g = inst.get_nodeattr
    attrs = inst.get_nodeattr_types()
    return ThresholdingLayer(
        name=node.name, impl=_impl(node.op_type), channels=g("NumChannels"), pe=g("PE"),
        vectors=int(np.prod(g("numInputVectors"))), input_bits=_bits(inst, "inputDataType"),
        threshold_bits=_bits(inst, "weightDataType"), output_bits=_bits(inst, "outputDataType"),
        num_steps=g("numSteps"),
        ram_style=g("ram_style") if "ram_style" in attrs else "distributed")


def _swg_layer(node, inst, part: str) -> SlidingWindowLayer:
    g = inst.get_nodeattr
    return SlidingWindowLayer(
        name=node.name, impl=_impl(node.op_type), channels=g("IFMChannels"),
        ifm_dim=tuple(g("IFMDim")), ofm_dim=tuple(g("OFMDim")), kernel=tuple(g("ConvKernelDim")),
        stride=tuple(g("Stride")), dilation=tuple(g("Dilation")), simd=g("SIMD"),
        parallel_window=bool(g("parallel_window")), depthwise=bool(g("depthwise")),
        input_bits=_bits(inst, "inputDataType"), ram_style=g("ram_style"))


def _padding_layer(node, inst, part: str) -> PaddingLayer:
    g = inst.get_nodeattr
    return PaddingLayer(name=node.name, impl=_impl(node.op_type), channels=g("NumChannels"),
                        img_dim=tuple(g("ImgDim")), padding=tuple(g("Padding")), simd=g("SIMD"),
                        input_bits=_bits(inst, "inputDataType"), batch=g("numInputVectors"))


def _dwc_layer(node, inst, part: str) -> WidthConverterLayer:
    return WidthConverterLayer(name=node.name, impl=_impl(node.op_type),
                               in_width=inst.get_instream_width(),
                               out_width=inst.get_outstream_width())


def _fifo_layer(node, inst, part: str) -> FifoLayer:
    return FifoLayer(name=node.name, impl=_impl(node.op_type), depth=inst.get_nodeattr("depth"),
                     width=inst.get_instream_width_padded(),
                     ram_style=inst.get_nodeattr("ram_style"))


def _pool_layer(node, inst, part: str) -> PoolLayer:
    import numpy as np

    g = inst.get_nodeattr
    return PoolLayer(name=node.name, impl=_impl(node.op_type), channels=g("Channels"), pe=g("PE"),
                     kernel=int(np.prod(g("KernelSize"))), out_pixels=int(np.prod(g("OutImgDims"))),
                     batch=g("BatchSize"), input_bits=_bits(inst, "InputDataType"))


def _labelselect_layer(node, inst, part: str) -> LabelSelectLayer:
    g = inst.get_nodeattr
    return LabelSelectLayer(name=node.name, impl=_impl(node.op_type), labels=g("Labels"),
                            pe=g("PE"), input_bits=_bits(inst, "inputDataType"))


_READERS: dict[str, Callable] = {
    "MVAU": _mvau_layer, "Thresholding": _thresholding_layer,
    "ConvolutionInputGenerator": _swg_layer, "FMPadding": _padding_layer,
    "StreamingDataWidthConverter": _dwc_layer, "StreamingFIFO": _fifo_layer,
    "Pool": _pool_layer, "LabelSelect": _labelselect_layer,
}


def is_hw_node(node) -> bool:
    """Is this ONNX node a specialised FINN HW layer (an RTL or HLS variant)?"""
    return node.domain.startswith("finn.custom_op.fpgadataflow.") and node.op_type.endswith(
        ("_rtl", "_hls"))


def layer_from_node(node, part: str) -> Layer:
    """The cost model's description of one specialised FINN HW node."""
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    base = node.op_type.rsplit("_", 1)[0]
    reader = _READERS.get(base)
    if reader is None:
        return OtherLayer(name=node.name, impl=_impl(node.op_type), op_type=node.op_type,
                          cycles=int(inst.get_exp_cycles()))
    return reader(node, inst, part)


def geometry_only(layer: Layer) -> Layer:
    """The layer as known before FINN sees the weights: worst-case accumulator and thresholds."""
    if isinstance(layer, MvauLayer):
        return layer.model_copy(update={"acc_bits": None})
    if isinstance(layer, ThresholdingLayer):
        return layer.model_copy(update={"threshold_bits": None})
    return layer


def model_layers(model, part: str, from_geometry: bool = False) -> list[Layer]:
    """Cost-model descriptions of every specialised HW node of a FINN dataflow model, in order.

    `from_geometry=True` drops what FINN derived from the weight and threshold values (narrowed
    accumulator and threshold widths), as a screen without a FINN build would know the layer.
    """
    layers = [layer_from_node(n, part) for n in model.graph.node if is_hw_node(n)]
    return [geometry_only(x) for x in layers] if from_geometry else layers


class ModelCost(BaseModel):
    """The cost model's estimate of a whole dataflow model, node by node."""

    model_config = ConfigDict(frozen=True)

    source: ResourceSource  # the calibration's source the model imitates
    layers: list[LayerCost]
    total: Resources
    max_cycles: int  # the slowest layer's cycles per frame


def cost_layers(layers: Iterable[Layer], calibration: Calibration | None = None) -> ModelCost:
    """Estimate each layer and sum them."""
    cal = calibration or load_calibration()
    rows = [estimate(x, cal) for x in layers]
    return ModelCost(source=cal.source, layers=rows,
                     total=Resources.total(r.resources for r in rows),
                     max_cycles=max((r.cycles for r in rows), default=0))


def model_cost(model, part: str, calibration: Calibration | None = None,
               from_geometry: bool = False) -> ModelCost:
    """Cost every HW node of a folded FINN dataflow model (ModelWrapper) with the cost model."""
    return cost_layers(model_layers(model, part, from_geometry), calibration)


# ----------------------------------------------------------------------------- error against FINN


def finn_node_estimates(model, part: str) -> dict[str, LayerCost]:
    """FINN's own estimate (res_estimation, exp_cycles) of every HW node, by node name."""
    from qonnx.custom_op.registry import getCustomOp

    out = {}
    for node in model.graph.node:
        if not is_hw_node(node):
            continue
        inst = getCustomOp(node)
        r = inst.node_res_estimation(part)
        res = Resources(lut=r["LUT"], bram18=r["BRAM_18K"], uram=r["URAM"], dsp=r["DSP"])
        out[node.name] = LayerCost(name=node.name, node_type=node.op_type, resources=res,
                                   cycles=int(inst.get_exp_cycles()))
    return out


class NodeError(BaseModel):
    """Model vs reference on one node."""

    model_config = ConfigDict(frozen=True)

    name: str
    node_type: str
    model: LayerCost
    reference: LayerCost
    rel_error: dict[str, float]  # lut, bram18, uram, dsp, cycles


class ErrorSummary(BaseModel):
    """Median and worst relative error of one quantity over the nodes where it is not 0."""

    model_config = ConfigDict(frozen=True)

    nodes: int  # nodes where model or reference is non-zero
    median: float
    worst: float
    worst_node: str
    total_model: float
    total_reference: float

    @property
    def total_rel_error(self) -> float:
        return _rel_error(self.total_model, self.total_reference)


class ErrorReport(BaseModel):
    """The cost model's error against a reference (FINN's estimate) per node and per resource."""

    model_config = ConfigDict(frozen=True)

    reference: ResourceSource
    nodes: list[NodeError]
    summary: dict[str, ErrorSummary]  # lut, bram18, uram, dsp, cycles
    by_node_type: dict[str, dict[str, ErrorSummary]]

    def describe(self) -> str:
        """One line per quantity: median / worst relative error and the worst node."""
        return "\n".join(
            f"{k:7s} median {100 * s.median:6.2f} %  worst {100 * s.worst:7.2f} % ({s.worst_node})"
            f"  total {s.total_model:g} vs {s.total_reference:g}"
            for k, s in self.summary.items())


QUANTITIES = (*BUDGETED, "cycles")


def _quantity(cost: LayerCost, q: str) -> float:
    return float(cost.cycles) if q == "cycles" else cost.resources.get(q)


def _summaries(rows: Sequence[NodeError]) -> dict[str, ErrorSummary]:
    out = {}
    for q in QUANTITIES:
        live = [r for r in rows if _quantity(r.model, q) or _quantity(r.reference, q)]
        errs = [r.rel_error[q] for r in live]
        worst = max(live, key=lambda r: r.rel_error[q], default=None)
        out[q] = ErrorSummary(
            nodes=len(live), median=median(errs) if errs else 0.0, worst=max(errs, default=0.0),
            worst_node=worst.name if worst else "",
            total_model=sum(_quantity(r.model, q) for r in rows),
            total_reference=sum(_quantity(r.reference, q) for r in rows))
    return out


def error_report(model_costs: Iterable[LayerCost], reference: dict[str, LayerCost],
                 source: ResourceSource = ResourceSource.FINN_ESTIMATE) -> ErrorReport:
    """Per-node and per-resource error of the model's costs against reference costs (by name)."""
    rows = []
    for m in model_costs:
        ref = reference[m.name]
        rel = {q: _rel_error(_quantity(m, q), _quantity(ref, q)) for q in QUANTITIES}
        rows.append(NodeError(name=m.name, node_type=m.node_type, model=m, reference=ref,
                              rel_error=rel))
    by_type: dict[str, list[NodeError]] = {}
    for r in rows:
        by_type.setdefault(r.node_type, []).append(r)
    return ErrorReport(reference=source, nodes=rows, summary=_summaries(rows),
                       by_node_type={k: _summaries(v) for k, v in sorted(by_type.items())})


def compare_with_finn(model, part: str, calibration: Calibration | None = None,
                      from_geometry: bool = False) -> ErrorReport:
    """The cost model's error against FINN's estimate on every HW node of a folded model."""
    return error_report(model_cost(model, part, calibration, from_geometry).layers,
                        finn_node_estimates(model, part))
