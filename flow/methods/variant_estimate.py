"""FINN's estimate of one trained variant of a method's comparison table (qsparse, DFQ), and the
CSV form of the methods' typed table rows."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from flow.core.io import csv_text
from flow.methods.base import MethodContext
from flow.models import Net


class FinnEstimate(BaseModel):
    """FINN's estimate of one variant's exported network on the recipe's hardware."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lut_finn_estimate: float
    bram18_finn_estimate: float
    dsp_finn_estimate: float
    fps_finn_estimate: float  # frames per second


def finn_estimate(model: Net, ctx: MethodContext, work: Path) -> FinnEstimate:
    """FINN's estimate of a trained network on the recipe's hardware."""
    from flow.finn.recipe_build import build_for_recipe
    from flow.ml.export import export_model

    qmodel = export_model(model, ctx.data.in_shape, ctx.data.input_bits, work / "model.qonnx.onnx")
    build = build_for_recipe(qmodel, ctx.recipe, work / "finn", f"{work.name} variant")
    t = build.totals
    return FinnEstimate(lut_finn_estimate=t.lut, bram18_finn_estimate=t.bram18,
                        dsp_finn_estimate=t.dsp, fps_finn_estimate=build.fps)


def flat_row(row: BaseModel) -> dict:
    """A row's fields as plain data, its `finn` estimate (if any) spliced in at its place, each
    FINN column empty where there is none."""
    out: dict = {}
    for key, value in row.model_dump(mode="json").items():
        if key == "finn":
            out.update(value or dict.fromkeys(FinnEstimate.model_fields))
        else:
            out[key] = value
    return out


def rows_csv(rows: Sequence[BaseModel]) -> str:
    """A method's table rows as CSV: one column a field, in the rows' field order."""
    flat = [flat_row(r) for r in rows]
    return csv_text(flat, list(flat[0]) if flat else [])
