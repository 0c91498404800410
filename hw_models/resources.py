"""Resource accounting: sum per-layer estimates, check them resource by resource against a board.

Keys are "LUT", "BRAM18", "URAM", "DSP". A design fits when every resource's use is at most
`limit` times what the board has (limit 1.0 = the whole device; FINN's floorplanner aims lower,
e.g. 0.7 of the LUTs, for timing closure). Nothing is silently accepted: each over-budget resource
is named in `FitReport.over`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from hw_models.boards import Board, get_board

RESOURCES: tuple[str, ...] = ("LUT", "BRAM18", "URAM", "DSP")


@dataclass(frozen=True)
class ResourceFit:
    """Use of one resource against what the board offers."""

    resource: str
    used: float
    available: int
    utilisation: float  # used / available (inf where the board has none of it and some is used)
    fits: bool


@dataclass(frozen=True)
class FitReport:
    """Per-resource fit of one design on one board."""

    board: str
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
        """One line per resource, e.g. 'DSP 300/220 (136.4 %) OVER'."""
        return "\n".join(
            f"{r.resource} {r.used:g}/{r.available} ({100 * r.utilisation:.1f} %)"
            + ("" if r.fits else " OVER")
            for r in self.rows
        )

    def to_dict(self) -> dict:
        return {
            "board": self.board,
            "limit": self.limit,
            "fits": self.fits,
            "over": self.over,
            "resources": {r.resource: asdict(r) for r in self.rows},
        }


def total_resources(per_layer: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Sum of each resource over the layers (missing keys count as 0)."""
    totals = dict.fromkeys(RESOURCES, 0.0)
    for layer in per_layer:
        for res in RESOURCES:
            totals[res] += float(layer.get(res, 0.0))
    return totals


def fit(totals: Mapping[str, float], board: Board | str, limit: float = 1.0) -> FitReport:
    """Check each resource of `totals` against `board` (use <= limit * available)."""
    if not 0.0 < limit <= 1.0:
        raise ValueError(f"limit must be in (0, 1], got {limit}")
    board = get_board(board)
    capacity = board.capacity()
    rows = []
    for res in RESOURCES:
        used = float(totals.get(res, 0.0))
        available = capacity[res]
        if available > 0:
            utilisation = used / available
        else:
            utilisation = 0.0 if used == 0 else float("inf")
        rows.append(ResourceFit(res, used, available, utilisation, used <= limit * available))
    return FitReport(board.name, limit, tuple(rows))
