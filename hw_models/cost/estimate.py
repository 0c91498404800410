"""Estimates: resources and cycles per frame of one layer (`estimate`), of a list of layers
(`cost_layers`) and of every specialised HW node of a FINN dataflow model (`model_cost`)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from hw_models.cost.calibration import Calibration, load_calibration, weighted_sum
from hw_models.cost.layer_cycles import layer_cycles
from hw_models.cost.layers import Layer
from hw_models.cost.nodes import model_layers
from hw_models.cost.terms import layer_terms
from hw_models.cycles import critical_path_cycles, graph_predecessors
from hw_models.resources import BUDGETED, Resources, ResourceSource


class LayerCost(BaseModel):
    """The cost model's estimate of one layer."""

    model_config = ConfigDict(frozen=True)

    name: str
    node_type: str
    resources: Resources
    cycles: int


def estimate(layer: Layer, calibration: Calibration | None = None) -> LayerCost:
    """Resources (source: cost model) and cycles per frame of one layer."""
    cal = calibration or load_calibration()
    coef = cal.coefficients.get(layer.node_type, {})
    terms = layer_terms(layer)
    values = {res: max(0.0, weighted_sum(coef.get(res, {}), terms.get(res, {})))
              for res in BUDGETED}
    values = {k: float(round(v)) for k, v in values.items()}  # FINN counts whole units
    return LayerCost(name=layer.name, node_type=layer.node_type, resources=Resources(**values),
                     cycles=layer_cycles(layer))


class ModelCost(BaseModel):
    """The cost model's estimate of a whole dataflow model, node by node."""

    model_config = ConfigDict(frozen=True)

    source: ResourceSource  # the calibration's source the model imitates
    layers: list[LayerCost]
    total: Resources
    max_cycles: int  # the slowest layer's cycles per frame
    latency_cycles: int  # first frame along the longest path (hw_models.cycles)


def cost_layers(layers: Iterable[Layer], calibration: Calibration | None = None,
                predecessors: Mapping[str, Sequence[str]] | None = None) -> ModelCost:
    """Estimate each layer and sum them; the latency over the graph `predecessors` describes
    (by layer name), else over a chain."""
    cal = calibration or load_calibration()
    rows = [estimate(x, cal) for x in layers]
    return ModelCost(source=cal.source, layers=rows,
                     total=Resources.total(r.resources for r in rows),
                     max_cycles=max((r.cycles for r in rows), default=0),
                     latency_cycles=critical_path_cycles({r.name: r.cycles for r in rows},
                                                         predecessors))


def model_cost(model, part: str, calibration: Calibration | None = None,
               from_geometry: bool = False) -> ModelCost:
    """Cost every HW node of a folded FINN dataflow model (ModelWrapper) with the cost model,
    its latency along the model's longest path (through forks and joins)."""
    return cost_layers(model_layers(model, part, from_geometry), calibration,
                       graph_predecessors(model))
