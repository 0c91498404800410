"""Board fit: a design fits when every budgeted resource (lut, bram18, uram, dsp) is at most
`limit` times what the board has; each one over is named."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from hw_models.boards import Board, get_board
from hw_models.resources import BUDGETED, Resources, ResourceSource


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
