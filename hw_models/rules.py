"""Hardware rules of FINN's RTL library that every part of densiflow obeys, stated once.

Each rule names where it comes from; the flow's recipe checks, the FINN build, the folding
optimiser and the simulator all read them from here.
"""
from __future__ import annotations

# FINN's RTL layers (MVAU_rtl, Thresholding_rtl) need signed weights and activations of at least
# 2 bits; 1-bit (bipolar/XNOR) layers exist only as HLS, which Verilator cannot simulate.
MIN_RTL_BITS = 2
# A ReLU activation needs >= 2 bits: FINN's RTL thresholding needs them, and a 1-bit unsigned
# ReLU quantizer has a single nonzero level whose QONNX export does not match PyTorch (seen:
# error 23.1). Binary networks use bipolar sign activations, which the zoo does not build.
MIN_ACT_BITS = MIN_RTL_BITS
# Widest quantized value the flow builds: Brevitas' Uint8/Int8 quantizers and FINN's
# MultiThreshold conversion (max_multithreshold_bit_width=8) stop at 8 bits.
MAX_BITS = 8
# The accelerator's input is an unsigned integer of at most MAX_BITS bits (images 0..255).
MAX_INPUT_BITS = MAX_BITS
# Inter-layer FIFO depth in words: FINN's StreamingFIFO_rtl takes 2..65536 (its shallow FIFOs
# are 2 words); 32 words keep bursty sliding windows from stalling (measured on digits).
MIN_FIFO_DEPTH, MAX_FIFO_DEPTH = 2, 65536
DEFAULT_FIFO_DEPTH = 32


def input_bits(pixel_bits: int) -> int:
    """Bits of the accelerator's input for `pixel_bits`-bit pixels (capped at MAX_INPUT_BITS)."""
    return min(int(pixel_bits), MAX_INPUT_BITS)


def mvau_simd_ok(mw: int, simd: int, in_simd: int | None = None) -> bool:
    """May an RTL MVAU with MW inputs per row use this SIMD?

    - SIMD divides MW (FINN's folding rule);
    - MW/SIMD >= 2 when MW >= 2: finn-rtllib's mvu_vvu_axi with SIMD == MW overflows its output
      queue under backpressure ("Overflowing output queue" in our Verilator runs, finn-plus 1.6.1);
    - SIMD a multiple or divisor of the producing sliding window's SIMD (`in_simd`): otherwise the
      width converter between them has a non-integer ratio and takes about two cycles per word
      (measured on digits: 1247 vs 686 cycles/frame), and synthesises to thousands of LUTs.
    """
    if simd < 1 or mw % simd:
        return False
    if mw >= 2 and mw // simd < 2:
        return False
    return in_simd is None or simd % in_simd == 0 or in_simd % simd == 0


def divisors(n: int) -> list[int]:
    """The divisors of n in ascending order: the legal SIMD / PE of a dimension of n (they divide
    it, FINN's folding rule)."""
    return [d for d in range(1, n + 1) if n % d == 0]


def vvau_rtl_folding(window: int, channels: int, simd: int, pe: int) -> tuple[int, int]:
    """(SIMD, PE) of an RTL VVAU over a `window` = k*k kernel obeying mvau_simd_ok (its VVU shares
    the MVU's mvu_vvu_axi), with at least simd * pe lanes where the channels allow: the given
    folding where it is allowed already."""
    if mvau_simd_ok(window, simd):
        return simd, pe
    new_simd = max(s for s in divisors(window) if mvau_simd_ok(window, s))
    fast = [p for p in divisors(channels) if new_simd * p >= simd * pe]
    return new_simd, (min(fast) if fast else channels)
