"""FINN's estimate of one trained variant of a method's comparison table (qsparse, DFQ)."""
from __future__ import annotations

from pathlib import Path

from flow.methods.base import MethodContext
from flow.models import Net

FINN_COLUMNS = ["lut_finn_estimate", "bram18_finn_estimate", "dsp_finn_estimate",
                "fps_finn_estimate"]


def finn_estimate(model: Net, ctx: MethodContext, work: Path) -> dict[str, float]:
    """FINN's estimate of a trained network on the recipe's hardware: the FINN_COLUMNS."""
    from flow.export import export_model
    from flow.finn_recipe import build_for_recipe

    qmodel = export_model(model, ctx.data.in_shape, ctx.data.input_bits, work / "model.qonnx.onnx")
    build = build_for_recipe(qmodel, ctx.recipe, work / "finn", f"{work.name} variant")
    t = build.totals
    return {"lut_finn_estimate": t.lut, "bram18_finn_estimate": t.bram18,
            "dsp_finn_estimate": t.dsp, "fps_finn_estimate": build.fps}
