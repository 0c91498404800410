"""Board catalogue: the FPGA part on each supported board and its programmable-logic resources.

Resource counts are the device totals from AMD's product tables (cited per board); BRAM is counted
in 18 Kb halves (one 36 Kb block = two BRAM18), as FINN's estimates count it. FINN's own
`finn/util/platforms.py` carries per-SLR numbers "observed from Vivado" that leave out what a shell
or Vivado reserves, so they are a little lower (ZU7EV: 230,000 LUT / 610 BRAM18 / 92 URAM; U250:
4 x 375,000 LUT / 4 x 1,152 BRAM18 / 4 x 2,880 DSP); `tests/test_boards.py` checks ours against
them and against FINN's part map (`finn/util/basic.py`).
"""
from __future__ import annotations

from dataclasses import dataclass

from hw_models.errors import UnknownBoardError
from hw_models.resources import Resources


@dataclass(frozen=True)
class Board:
    """One board: its FPGA part, programmable-logic resources and what FINN calls it."""

    name: str
    part: str
    lut: int
    ff: int
    bram18: int
    uram: int
    dsp: int
    dsp_type: str  # DSP48E1 (7-series), DSP48E2 (UltraScale+)
    clock_mhz: float  # default fabric clock the flow targets on this board
    finn_board: str  # key in FINN's part_map / platforms ("Pynq-Z1", "ZCU104", ...)
    shell_flow: str  # FINN shell flow: "vivado_zynq" or "vitis_alveo"
    source: str  # where the resource counts come from
    aliases: tuple[str, ...] = ()

    @property
    def clock_hz(self) -> float:
        return self.clock_mhz * 1e6

    def capacity(self) -> Resources:
        """Available resources, FFs included."""
        return Resources(lut=self.lut, bram18=self.bram18, uram=self.uram, dsp=self.dsp,
                         ff=self.ff)

    @property
    def family(self) -> str:
        """Yosys synth_xilinx family of the part: xc7 (7-series/Zynq-7000) or xcup (UltraScale+)."""
        return "xc7" if self.part.startswith("xc7") else "xcup"


BOARDS: tuple[Board, ...] = (
    Board(
        name="Pynq-Z1",
        part="xc7z020clg400-1",
        lut=53_200,
        ff=106_400,
        bram18=280,  # 140 x 36 Kb
        uram=0,
        dsp=220,
        dsp_type="DSP48E1",
        clock_mhz=100.0,
        finn_board="Pynq-Z1",
        shell_flow="vivado_zynq",
        source="AMD DS190 (Zynq-7000 overview), XC7Z020; equals FINN Zynq7020_Platform",
        aliases=("pynq-z1", "pynqz1", "pynq", "z1", "xc7z020"),
    ),
    Board(
        name="ZCU104",
        part="xczu7ev-ffvc1156-2-e",
        lut=230_400,
        ff=460_800,
        bram18=624,  # 312 x 36 Kb
        uram=96,
        dsp=1_728,
        dsp_type="DSP48E2",
        clock_mhz=200.0,
        finn_board="ZCU104",
        shell_flow="vivado_zynq",
        source="AMD DS891 (Zynq UltraScale+ MPSoC overview), XCZU7EV",
        aliases=("zcu104", "zu7ev", "xczu7ev"),
    ),
    Board(
        name="KV260",
        part="xck26-sfvc784-2LV-c",
        lut=117_120,
        ff=234_240,
        bram18=288,  # 144 x 36 Kb
        uram=64,
        dsp=1_248,
        dsp_type="DSP48E2",
        clock_mhz=200.0,
        finn_board="KV260_SOM",
        shell_flow="vivado_zynq",
        source="AMD DS987 (Kria K26 SOM data sheet), XCK26",
        aliases=("kv260", "kv260_som", "k26", "kria"),
    ),
    Board(
        name="U250",
        part="xcu250-figd2104-2L-e",
        lut=1_728_000,
        ff=3_456_000,
        bram18=5_376,  # 2,688 x 36 Kb
        uram=1_280,
        dsp=12_288,
        dsp_type="DSP48E2",
        clock_mhz=200.0,
        finn_board="U250",
        shell_flow="vitis_alveo",
        source="AMD DS962 (Alveo U200/U250 data sheet), XCU250 device totals",
        aliases=("u250", "alveo-u250", "alveo_u250", "alveo u250", "xcu250"),
    ),
)


def _key(name: str) -> str:
    return name.strip().lower()


_LOOKUP: dict[str, Board] = {
    _key(alias): board for board in BOARDS for alias in (board.name, *board.aliases)
}


def board_names() -> list[str]:
    """Canonical names of the catalogue's boards."""
    return [b.name for b in BOARDS]


def get_board(name: str | Board) -> Board:
    """The board called `name` (case-insensitive; aliases such as "zcu104", "u250" work)."""
    if isinstance(name, Board):
        return name
    board = _LOOKUP.get(_key(str(name)))
    if board is None:
        raise UnknownBoardError(
            f"unknown board {name!r}; choose one of: {', '.join(board_names())} "
            "(case-insensitive, e.g. 'pynq-z1', 'zcu104', 'kv260', 'u250')"
        )
    return board
