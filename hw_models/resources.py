"""FPGA resources: one type, one spelling, and the check of a design against a board.

`Resources` holds lut, ff, bram18 (BRAM in 18 Kb halves, as FINN counts), uram and dsp. Every
figure densiflow reports travels with its `ResourceSource`: FINN's estimate, Yosys synthesis,
Vivado post-route, or densiflow's analytic cost model. The check against a board is
hw_models.fit.
"""
from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

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
