"""FPGA resources: one type, one spelling, and the check of a design against a board.

`Resources` holds lut, ff, bram18 (BRAM in 18 Kb halves, as FINN counts), uram and dsp. Every
figure densiflow reports travels with its `ResourceSource`: FINN's estimate, Yosys synthesis,
Vivado post-route, or densiflow's analytic cost model. A design fits when every budgeted resource
(lut, bram18, uram, dsp) is at most `limit` times what the board has; each one over is named.
"""
from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from hw_models.boards import Board, get_board

BUDGETED: tuple[str, ...] = ("lut", "bram18", "uram", "dsp")  # what boards are budgeted by


class ResourceSource(StrEnum):
    """Where a resource figure comes from."""

    FINN_ESTIMATE = "finn_estimate"
    YOSYS = "yosys"
    VIVADO = "vivado"
    COST_MODEL = "cost_model"

    @property
    def label(self) -> str:
        return {"finn_estimate": "FINN estimate", "yosys": "Yosys synthesis",
                "vivado": "Vivado post-route", "cost_model": "densiflow cost model"}[self.value]


class Resources(BaseModel):
    """Resource use of a node or a design. `ff` is None where the source does not count FFs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lut: float = Field(default=0.0, ge=0)
    bram18: float = Field(default=0.0, ge=0)
    uram: float = Field(default=0.0, ge=0)
    dsp: float = Field(default=0.0, ge=0)
    ff: float | None = Field(default=None, ge=0)

    def __add__(self, other: Resources) -> Resources:
        ff = None if self.ff is None and other.ff is None else (self.ff or 0) + (other.ff or 0)
        return Resources(**{k: getattr(self, k) + getattr(other, k) for k in BUDGETED}, ff=ff)

    def get(self, name: str) -> float:
        """One budgeted resource by name (lut, bram18, uram, dsp)."""
        if name not in BUDGETED:
            raise KeyError(f"unknown resource {name!r}; resources are {', '.join(BUDGETED)}")
        return float(getattr(self, name))

    @classmethod
    def total(cls, parts: Iterable[Resources]) -> Resources:
        """Sum of the parts (all zero for none)."""
        out = cls()
        for part in parts:
            out = out + part
        return out


class ResourceFit(BaseModel):
    """Use of one resource against what the board offers."""

    model_config = ConfigDict(frozen=True, ser_json_inf_nan="constants")

    resource: str
    used: float
    available: int
    utilisation: float  # used / available (inf where the board has none and some is used)
    fits: bool


class FitReport(BaseModel):
    """Per-resource fit of one design on one board, from one source of figures."""

    model_config = ConfigDict(frozen=True)

    board: str
    source: ResourceSource
    limit: float
    rows: tuple[ResourceFit, ...]

    @property
    def fits(self) -> bool:
        return all(r.fits for r in self.rows)

    @property
    def over(self) -> list[str]:
        """Resources the design needs more of than the board offers (within the limit)."""
        return [r.resource for r in self.rows if not r.fits]

    def row(self, resource: str) -> ResourceFit:
        return next(r for r in self.rows if r.resource == resource)

    def describe(self) -> str:
        """One line per resource, e.g. 'dsp 300/220 (136.4 %) OVER'."""
        return "\n".join(
            f"{r.resource} {r.used:g}/{r.available} ({100 * r.utilisation:.1f} %)"
            + ("" if r.fits else " OVER")
            for r in self.rows
        )


def fit(used: Resources, board: Board | str, source: ResourceSource,
        limit: float = 1.0) -> FitReport:
    """Check each budgeted resource of `used` against `board` (use <= limit * available)."""
    if not 0.0 < limit <= 1.0:
        raise ValueError(f"limit must be in (0, 1], got {limit}")
    board = get_board(board)
    capacity = board.capacity()
    rows = []
    for res in BUDGETED:
        amount, available = used.get(res), int(capacity.get(res))
        if available > 0:
            utilisation = amount / available
        else:
            utilisation = 0.0 if amount == 0 else float("inf")
        rows.append(ResourceFit(resource=res, used=amount, available=available,
                                utilisation=utilisation, fits=amount <= limit * available))
    return FitReport(board=board.name, source=source, limit=limit, rows=tuple(rows))
