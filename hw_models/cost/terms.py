"""Structural terms of a layer per resource (multiplier lanes, adder-tree bits, memory tiles,
stream widths): closed forms from its geometry that the calibrated coefficients weigh.

Each term is built with its `TermKind`, what it models: FINN's own estimate formulas, the
structure of the synthesised RTL, or structure both follow. A fit to one source leaves the terms
of the other out (`TermKind.fits`).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from enum import StrEnum

from hw_models.cost.layers import (
    AddStreamsLayer,
    DuplicateStreamsLayer,
    FifoLayer,
    GlobalAccPoolLayer,
    LabelSelectLayer,
    Layer,
    MvauLayer,
    PaddingLayer,
    PoolLayer,
    SlidingWindowLayer,
    ThresholdingLayer,
    VvauLayer,
    WidthConverterLayer,
    swg_buffer_depth,
    swg_parallel,
)
from hw_models.cost.memory import (
    bram18_buffer,
    bram18_sdp,
    threshold_memory,
    uram288,
    yosys_memory,
    yosys_threshold_rom,
)
from hw_models.resources import ResourceSource

Terms = dict[str, dict[str, float]]  # resource -> term name -> value


class TermKind(StrEnum):
    """What a term models."""

    SHARED = "shared"  # structure FINN's formulas and the synthesised RTL both follow
    FINN = "finn"  # FINN's own estimate formulas
    SYNTHESIS = "synthesis"  # the structure of the synthesised RTL (Yosys, Vivado)

    def fits(self, source: ResourceSource) -> bool:
        """Does a fit to `source`'s figures use terms of this kind?"""
        synthesis = source in (ResourceSource.YOSYS, ResourceSource.VIVADO)
        return self is not (TermKind.FINN if synthesis else TermKind.SYNTHESIS)


TermTable = dict[str, dict[TermKind, dict[str, float]]]  # resource -> kind -> name -> value


def shared(**values: float) -> dict[TermKind, dict[str, float]]:
    """Terms of structure FINN's formulas and the synthesised RTL both follow."""
    return {TermKind.SHARED: values}


def finn_only(**values: float) -> dict[TermKind, dict[str, float]]:
    """Terms of FINN's own estimate formulas."""
    return {TermKind.FINN: values}


def synthesis_only(**values: float) -> dict[TermKind, dict[str, float]]:
    """Terms of the synthesised RTL's structure."""
    return {TermKind.SYNTHESIS: values}


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
    bram = 0 if decoupled and x.ram_style in ("distributed", "ultra") else bram18_sdp(
        depth, width)
    uram = 0 if decoupled and x.ram_style != "ultra" else uram288(depth, width)
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


def _mvau_terms(x: MvauLayer) -> TermTable:
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
            **shared(const=1.0, accumulator=p * acc,
                     comparators=p * levels * acc if thr else 0.0),
            **finn_only(
                mult=p * q * (2 * math.ceil((w + a) / 6) - 1) * (w + a) if lut_mult else 0.0,
                adder_tree=p * (w + a) * (2 * q - 1),
                thresholds=p * levels * acc * math.ceil(tmem / 64) if thr else 0.0,
                weights_lutram=p * q * w * math.ceil(wmem / 64) if lut_weights else 0.0),
            **synthesis_only(
                weight_width=float(p * q * w),  # the weight stream's registers and muxes
                lane_sums=float(p * q * acc),  # per SIMD column and PE lane, in the fabric
                yosys_weights_lutram=y_lutram,
                dsp_slices=lanes),  # the fabric logic around each DSP lane
        },
        "bram18": {**finn_only(weights=bram), **synthesis_only(yosys_weights=y_bram)},
        "uram": finn_only(weights=uram),
        "dsp": {**finn_only(multipliers=float(dsp)), **synthesis_only(mvu_lanes=lanes)},
    }


def _vvau_weight_memory(x: VvauLayer) -> tuple[float, float]:
    """(BRAM18, URAM) of a VVAU's weight memory as FINN sizes it (VVAU.bram_estimation: its own
    ladder, 8/16/32-bit widths, nothing up to 128 words deep with ram_style auto)."""
    depth, width = x.channels * x.kernel[0] * x.kernel[1] / (x.pe * x.simd), (
        x.pe * x.simd * x.weight_bits)
    decoupled = x.mem_mode == "internal_decoupled"
    uram = uram288(depth, width) if decoupled and x.ram_style == "ultra" else 0
    if ((decoupled and x.ram_style in ("distributed", "ultra"))
            or (x.ram_style == "auto" and depth <= 128)
            or (x.mem_mode == "internal_embedded" and depth <= 128)
            or x.mem_mode == "external"):
        return 0.0, float(uram)
    for limit, tile_depth in ((1, 16384), (2, 8192)):
        if width == limit:
            return float(math.ceil(depth / tile_depth)), float(uram)
    for limit, tile_depth, tile_width in ((4, 4096, 4), (9, 2048, 8)):
        if width <= limit:
            return float(math.ceil(depth / tile_depth) * math.ceil(width / tile_width)), float(uram)
    if width <= 18 or depth > 512:
        return float(math.ceil(depth / 1024) * math.ceil(width / 16)), float(uram)
    return float(math.ceil(depth / 512) * math.ceil(width / 32)), float(uram)


def vvu_dsp_lanes(x: VvauLayer) -> int:
    """DSP slices of FINN's RTL VVU (finn-rtllib mvu_vvu_8sx9_dsp58): on DSP58, PE x ceil(SIMD/3)
    (three 8x9-bit products per slice); elsewhere its behavioural multipliers (hw_models.finn_ops
    .vvau forces them off Versal) map one product to one DSP48: PE x SIMD."""
    return x.pe * (math.ceil(x.simd / 3) if x.dsp_type == "DSP58" else x.simd)


def _vvau_terms(x: VvauLayer) -> TermTable:
    p, q, w, a = x.pe, x.simd, x.weight_bits, x.input_bits
    k = x.kernel[0] * x.kernel[1]
    bound = acc_bits_bound(k, w, a, x.input_signed)
    acc = bound if x.acc_bits is None else min(x.acc_bits, bound)
    wmem = x.channels * k // (p * q)
    levels = 2 ** x.output_bits - 1
    lut_weights = (x.mem_mode == "internal_decoupled" and x.ram_style == "distributed") or (
        x.mem_mode == "internal_embedded" and wmem <= 128)
    lut_mult = x.impl == "hls" and x.res_type != "dsp"
    act = not x.no_activation
    bram, uram = _vvau_weight_memory(x)
    rtl = x.impl == "rtl"
    lanes = float(vvu_dsp_lanes(x)) if rtl else 0.0
    y_lutram, y_bram = (yosys_memory(wmem, p * q * w) if rtl and x.mem_mode ==
                        "internal_decoupled" else (0.0, 0.0))
    dsp = lanes if rtl else (p * math.ceil((w + a) / 48) if x.res_type == "dsp" else 0.0)
    return {
        "lut": {
            **shared(const=1.0, accumulator=float(p * acc),
                     comparators=float(p * levels * acc) if act else 0.0),
            **finn_only(
                mult=p * q * (2 * math.ceil((w + a) / 6) - 1) * (w + a) if lut_mult else 0.0,
                adder_tree=float(p * (w + a) * (2 * q - 1)),
                thresholds=p * levels * acc * (x.channels // p) / 64 if act else 0.0,
                weights_lutram=p * q * w * math.ceil(wmem / 64) if lut_weights else 0.0),
            **synthesis_only(weight_width=float(p * q * w), lane_sums=float(p * q * acc),
                             yosys_weights_lutram=y_lutram, dsp_slices=lanes),
        },
        "bram18": {**finn_only(weights=bram), **synthesis_only(yosys_weights=y_bram)},
        "uram": finn_only(weights=uram),
        "dsp": {**finn_only(multipliers=float(dsp)), **synthesis_only(vvu_lanes=lanes)},
    }


def _bits_to_count(n: float) -> float:
    """Bits of a counter to n (at least 1)."""
    return float(max(1, math.ceil(math.log2(max(n, 2)))))


def _pool_terms(x: PoolLayer) -> TermTable:
    """Per PE lane a comparator and select (max) or an adder (sum) of the running value's width;
    a window counter."""
    acc = x.acc_bits or x.output_bits or x.input_bits
    maximum = x.function == "MaxPool"
    return {"lut": {**shared(const=1.0, width=float(x.pe * x.input_bits),
                             max_lanes=float(x.pe * acc) if maximum else 0.0,
                             sum_lanes=0.0 if maximum else float(x.pe * acc),
                             window_counter=_bits_to_count(x.kernel))},
            "bram18": {}, "uram": {}, "dsp": {}}


def _global_acc_pool_terms(x: GlobalAccPoolLayer) -> TermTable:
    """PE adders of the output's width; the running sums of channels/PE folds (registers for one
    fold, else a memory: RAM32M tiles of 32 words x 6 bits, or what Yosys maps by its costs);
    fold and pixel counters."""
    folds, lanes = x.channels // x.pe, x.pe * x.output_bits
    lutram, bram = yosys_memory(folds, lanes) if folds > 1 else (0.0, 0.0)
    return {"lut": {**shared(const=1.0, width=float(x.pe * x.input_bits), lanes=float(lanes),
                             counters=_bits_to_count(folds) + _bits_to_count(x.vectors)),
                    **finn_only(sums_lutram=float(math.ceil(lanes / 6) * math.ceil(folds / 32))
                                if folds > 1 else 0.0),
                    **synthesis_only(yosys_sums_lutram=lutram)},
            "bram18": synthesis_only(yosys_sums=bram), "uram": {}, "dsp": {}}


def _duplicate_streams_terms(x: DuplicateStreamsLayer) -> TermTable:
    """A pending bit and a ready term per output stream; one word register."""
    return {"lut": shared(const=1.0, outputs=float(x.outputs),
                          width=float(x.pe * x.input_bits * x.outputs)),
            "bram18": {}, "uram": {}, "dsp": {}}


def _add_streams_terms(x: AddStreamsLayer) -> TermTable:
    """PE adders of the output's width (one bit more than the wider input)."""
    return {"lut": shared(const=1.0, lanes=float(x.pe * x.output_bits),
                          width=float(x.pe * sum(x.input_bits))),
            "bram18": {}, "uram": {}, "dsp": {}}


def _thresholding_terms(x: ThresholdingLayer) -> TermTable:
    cf, tbits = x.channels / x.pe, x.threshold_bits or x.input_bits
    steps = x.num_steps if x.num_steps is not None else 2 ** x.output_bits - 1
    mem = {"lutram": 0.0, "bram18": 0.0, "uram": 0.0}
    hls_lut = {"comparators": 0.0, "lutram": 0.0}
    yosys = {"rom": 0.0, "bram18": 0.0}
    if x.impl == "rtl":
        for level in range(x.output_bits):
            kind, count = threshold_memory(tbits, cf * 2 ** level)
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
        "lut": {**shared(const=1.0, comparators=hls_lut["comparators"] or x.pe * x.input_bits),
                **finn_only(threshold_lutram=mem["lutram"] + hls_lut["lutram"],
                            threshold_bits=x.channels * steps * tbits),
                # the binary-search pipeline: one tbits comparison per output bit and lane
                **synthesis_only(
                    stage_bits=float(x.pe * x.output_bits * tbits) if x.impl == "rtl" else 0.0,
                    threshold_rom=yosys["rom"])},
        "bram18": {**finn_only(thresholds=mem["bram18"]),
                   **synthesis_only(yosys_thresholds=yosys["bram18"])},
        "uram": finn_only(thresholds=mem["uram"]),
        "dsp": {},
    }


def _clog2(x: int) -> int:
    return max(x - 1, 0).bit_length()


def _swg_terms(x: SlidingWindowLayer) -> TermTable:
    width, depth = x.simd * x.input_bits, swg_buffer_depth(x)
    parallel_2d = swg_parallel(x) and 1 not in x.ifm_dim
    if swg_parallel(x):
        kw = (x.kernel[1] - 1) * x.dilation[1] + 1
        mem_depth = (x.ifm_dim[1] - kw) + x.ifm_dim[1] * (x.dilation[0] - 1)
        count = x.kernel[0] - 1 if parallel_2d else 0
    else:
        mem_depth, count = depth, 1
    bram = bram18_buffer(mem_depth, width) * count if x.ram_style in ("block", "auto") else 0
    uram = uram288(mem_depth, width) * count if x.ram_style == "ultra" else 0
    out_width = width * (x.kernel[0] * x.kernel[1] if x.parallel_window else 1)
    y_lutram, y_bram = yosys_memory(mem_depth, width, x.ram_style)
    return {
        "lut": {**shared(const=1.0, out_width=float(out_width)),
                **finn_only(buffer_lutram=width * math.ceil(depth / 38)
                            if x.ram_style == "distributed" else 0.0),
                **synthesis_only(
                    yosys_buffer_lutram=y_lutram * count,
                    # the address generator's loop counters (image, kernel, channel folds, buffer)
                    counter_bits=float(sum(_clog2(v) for v in (
                        *x.ifm_dim, *x.kernel, x.channels // x.simd, depth))))},
        "bram18": {**finn_only(buffer=float(bram)), **synthesis_only(yosys_buffer=y_bram * count)},
        "uram": finn_only(buffer=float(uram)),
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


def _dwc_terms(x: WidthConverterLayer) -> TermTable:
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
        "lut": {**shared(const=1.0 if branch != "wire" else 0.0), **finn_only(finn=finn),
                **synthesis_only(
                    # registers of the generic buffer: PI0+PO0 words of g bits
                    buffer_bits=float(inw + outw) if generic else float(
                        lcm * (branch != "wire")),
                    # barrel rotator: PI0 positions x g bits, each selecting one of PI0 words by
                    # a rotation count (a shifter of log2(PI0) stages per bit, as Yosys builds it)
                    barrel=inw * math.log2(pi0) if rotating else 0.0,
                    barrel_bits=float(inw) if rotating else 0.0)},
        "bram18": {}, "uram": {}, "dsp": {},
    }


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


def _fifo_parts(x: FifoLayer) -> tuple[dict[str, float], dict[str, float], float]:
    """(LUT terms, BRAM18 terms, URAMs) of a FIFO's storage and control, by name."""
    depth, width = x.depth, x.width
    lut = dict.fromkeys(("const", "storage", "control", "width", "srl_bits", "yosys_lutram",
                         "memory_control"), 0.0)
    bram = {"storage": 0.0, "yosys_storage": 0.0}
    if depth < 2:
        return lut, bram, 0.0
    style, cw = _fifo_style(depth, width, x.ram_style), _clog2(depth + 1) + 1
    lut["const"], lut["width"] = 1.0, float(width)
    if style == "srl":  # one SRLC32E per 32 words of each bit (the output register holds one)
        lut["storage"] = lut["srl_bits"] = math.ceil((depth - 1 if depth > 4 else 4) / 32) * width
        lut["control"] = 5 * cw - 7
        return lut, bram, 0.0
    # a memory Yosys maps by its costs (fifo.sv's RAM_STYLE is not honoured)
    lut["yosys_lutram"], bram["yosys_storage"] = yosys_memory(depth, width)
    lut["memory_control"] = float(cw)
    uram = 0.0
    if style == "distributed":
        rows = 2 ** _clog2(depth - 1)
        lut["storage"] = math.ceil(rows / 32) * math.ceil(width / 2) * 5 // 4
        lut["storage"] += rows // 128 * (width // 2)
        lut["control"] = 8 * cw - 15
    elif style == "block":
        tiles = bram18_sdp(depth, width)
        bram["storage"] = float(tiles)
        lut["control"] = 54 + 3 * math.ceil(depth / 16384) + 2 * tiles // 5
    else:
        uram = float(uram288(depth, width))
        lut["control"] = 6 * cw + width
    return lut, bram, uram


def _fifo_terms(x: FifoLayer) -> TermTable:
    lut, bram, uram = _fifo_parts(x)
    return {
        "lut": {**shared(const=lut["const"], width=lut["width"]),
                **finn_only(storage=lut["storage"], control=lut["control"]),
                **synthesis_only(srl_bits=lut["srl_bits"], yosys_lutram=lut["yosys_lutram"],
                                 memory_control=lut["memory_control"])},
        "bram18": {**finn_only(storage=bram["storage"]),
                   **synthesis_only(yosys_storage=bram["yosys_storage"])},
        "uram": finn_only(storage=uram),
        "dsp": {},
    }


def _stream_terms(width: int) -> TermTable:
    return {"lut": shared(const=1.0, width=float(width)), "bram18": {}, "uram": {}, "dsp": {}}


def term_table(layer: Layer) -> TermTable:
    """The structural terms of one layer, per resource and kind."""
    x = layer
    if isinstance(x, MvauLayer):
        return _mvau_terms(x)
    if isinstance(x, VvauLayer):
        return _vvau_terms(x)
    if isinstance(x, PoolLayer):
        return _pool_terms(x)
    if isinstance(x, GlobalAccPoolLayer):
        return _global_acc_pool_terms(x)
    if isinstance(x, DuplicateStreamsLayer):
        return _duplicate_streams_terms(x)
    if isinstance(x, AddStreamsLayer):
        return _add_streams_terms(x)
    if isinstance(x, ThresholdingLayer):
        return _thresholding_terms(x)
    if isinstance(x, SlidingWindowLayer):
        return _swg_terms(x)
    if isinstance(x, WidthConverterLayer):
        return _dwc_terms(x)
    if isinstance(x, FifoLayer):
        return _fifo_terms(x)
    if isinstance(x, PaddingLayer):
        return _stream_terms(x.simd * x.input_bits)
    if isinstance(x, LabelSelectLayer):
        return _stream_terms(x.pe * x.input_bits)
    return {"lut": {}, "bram18": {}, "uram": {}, "dsp": {}}


def layer_terms(layer: Layer) -> Terms:
    """The structural terms of one layer, per resource (all kinds)."""
    return {res: _merged(kinds.values()) for res, kinds in term_table(layer).items()}


def fitted_terms(layer: Layer, source: ResourceSource) -> Terms:
    """The terms of one layer a fit to `source`'s figures weighs, per resource."""
    return {res: _merged(v for kind, v in kinds.items() if kind.fits(source))
            for res, kinds in term_table(layer).items()}


def _merged(groups: Iterable[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for group in groups:
        out.update(group)
    return out
