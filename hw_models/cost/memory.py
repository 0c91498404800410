"""Memory ladders: block RAM, URAM and LUTRAM tiles of a depth x width memory, as FINN sizes
them (FINN-R's BRAM18 ladder, URAM288, its RTL thresholding's primitive table) and as Yosys maps
them (memory_libmap by its costs)."""
from __future__ import annotations

import math
from functools import lru_cache


def bram18_sdp(depth: float, width: int) -> int:
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


def uram288(depth: float, width: int) -> int:
    """URAM288s (72 x 4096) of a depth x width memory."""
    return math.ceil(width / 72) * math.ceil(depth / 4096)


def bram18_buffer(depth: int, width: int) -> int:
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
    bram = bram18_sdp(depth, width)
    lutram = ram_style == "distributed" or (
        ram_style not in ("block", "ultra")
        and YOSYS_LUTRAM_UNIT_COST * units <= YOSYS_BRAM18_COST * bram)
    return (float(LUTS_PER_LUTRAM_UNIT * units), 0.0) if lutram else (0.0, float(bram))


# Versal-style primitive table FINN's RTL thresholding sizes its memories with (min waste wins).
THRESHOLD_PRIMITIVES = (("uram", 72, 4096), ("uram", 36, 8192), ("uram", 18, 16384),
                        ("uram", 9, 32768), ("bram18", 36, 512), ("bram18", 18, 1024),
                        ("bram18", 9, 2048), ("lutram", 1, 64))


@lru_cache(maxsize=4096)
def threshold_memory(width: int, depth: float) -> tuple[str, int]:
    """Primitive kind and count holding a width x depth threshold memory with least waste."""
    best = None
    for kind, pw, pd in THRESHOLD_PRIMITIVES:
        count = math.ceil(width / pw) * math.ceil(depth / pd)
        waste = count * pw * pd - width * depth
        if best is None or waste < best[0]:
            best = (waste, kind, count)
    return best[1], best[2]


def yosys_threshold_rom(depth: float, width: int) -> tuple[float, float]:
    """(LUTs, BRAM18s) of one stage's threshold memory in synthesis: its constants become a ROM,
    in LUT6s (64 entries per bit), or in block RAM from a RAMB18's 512 x 18 bits on (seen in Yosys
    0.70: 512 x 21 bits in BRAM, 512 x 11 in LUTs)."""
    if depth * width >= 512 * 18:
        return 0.0, float(bram18_sdp(depth, width))
    return float(width * math.ceil(depth / 64)), 0.0
