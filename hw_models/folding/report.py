"""The folding optimiser's typed inputs and outputs: budget, chosen foldings, figures, ceiling."""
from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hw_models.boards import Board
from hw_models.errors import HardwareError
from hw_models.resources import BUDGETED, Resources, ResourceSource

Objective = Literal["target", "max_fps"]


class FoldingError(HardwareError):
    """The model cannot be folded as asked (not a chain, or no folding fits the budget)."""


class Budget(BaseModel):
    """Fraction of each board resource the design may use."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lut: float = Field(default=1.0, gt=0, le=1)
    bram18: float = Field(default=1.0, gt=0, le=1)
    uram: float = Field(default=1.0, gt=0, le=1)
    dsp: float = Field(default=1.0, gt=0, le=1)

    def caps(self, board: Board) -> dict[str, float]:
        """Usable amount of each budgeted resource on `board`."""
        cap = board.capacity()
        return {r: getattr(self, r) * cap.get(r) for r in BUDGETED}


class LayerFolding(BaseModel):
    """The folding chosen for one node and the cost model's figures for it."""

    model_config = ConfigDict(frozen=True)

    name: str
    op_type: str
    simd: int | None = None
    pe: int | None = None
    parallel_window: bool | None = None
    ram_style: str | None = None
    cycles: int
    resources: Resources


class DesignFigures(BaseModel):
    """Frame rate and resources of one folded design, from one source."""

    model_config = ConfigDict(frozen=True)

    source: ResourceSource
    fps: float
    cycles: int  # slowest node's cycles per frame
    bottleneck: str
    resources: Resources  # layers, width converters and FIFOs
    fits: bool  # within the budget


class Ceiling(BaseModel):
    """Best frame rate the board's DSP/LUT budget allows for the network's MACs (closed form)."""

    model_config = ConfigDict(frozen=True)

    macs_per_frame: int
    dsp_macs: int  # MACs of layers whose multipliers are DSPs (RTL MVAU, HLS resType dsp)
    lut_macs: int  # MACs of layers whose multipliers are LUTs
    dsp_per_mac: float  # MAC-weighted, from the calibrated cost model
    lut_per_mac: float  # of a LUT multiplier lane (HLS MVAU, resType lut) at these bit-widths
    fps: float  # with each layer's multipliers as implemented (the optimiser's bound)
    fps_any_multiplier: float  # if every MAC could go to a DSP or to LUTs, whichever is free


class FoldingReport(BaseModel):
    """What the optimiser chose and how it compares with the ceiling and FINN's SetFolding."""

    model_config = ConfigDict(frozen=True)

    board: str
    clock_mhz: float
    target_fps: float
    budget: Budget
    objective: Objective
    calibration: ResourceSource
    layers: list[LayerFolding]
    cost_model: DesignFigures  # the optimiser's own view (cost model)
    ceiling: Ceiling
    binding: str  # what stops it going faster: "target", a resource, or "folding limits"
    finn: DesignFigures | None = None  # FINN's estimate of the optimiser's folding
    setfolding: DesignFigures | None = None  # FINN's estimate of FINN's SetFolding, same target
    search_s: float = 0.0

    @property
    def fraction_of_bound(self) -> float:
        """Frame rate (FINN's estimate if present) / min(target, ceiling)."""
        fps = (self.finn or self.cost_model).fps
        return fps / min(self.target_fps, self.ceiling.fps)


def over_caps(res: Resources, caps: dict[str, float]) -> dict[str, float]:
    """Resources over their cap, and by how much (used / cap)."""
    out = {}
    for r, cap in caps.items():
        used = res.get(r)
        if used > cap + 1e-9:
            out[r] = used / cap if cap > 0 else math.inf
    return out
