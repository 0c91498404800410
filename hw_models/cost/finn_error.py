"""The cost model's error against FINN's own estimate (res_estimation, exp_cycles) of the same
nodes: per node, and median / worst per resource and node type."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from statistics import median

from pydantic import BaseModel, ConfigDict

from hw_models.cost.calibration import Calibration, relative_error
from hw_models.cost.estimate import LayerCost, model_cost
from hw_models.cost.nodes import is_specialised_hw_node
from hw_models.resources import BUDGETED, Resources, ResourceSource


def finn_node_estimates(model, part: str) -> dict[str, LayerCost]:
    """FINN's own estimate (res_estimation, exp_cycles) of every HW node, by node name."""
    from qonnx.custom_op.registry import getCustomOp

    out = {}
    for node in model.graph.node:
        if not is_specialised_hw_node(node):
            continue
        inst = getCustomOp(node)
        r = inst.node_res_estimation(part)
        res = Resources(lut=r["LUT"], bram18=r["BRAM_18K"], uram=r["URAM"], dsp=r["DSP"])
        out[node.name] = LayerCost(name=node.name, node_type=node.op_type, resources=res,
                                   cycles=int(inst.get_exp_cycles()))
    return out


class NodeError(BaseModel):
    """Model vs reference on one node."""

    model_config = ConfigDict(frozen=True)

    name: str
    node_type: str
    model: LayerCost
    reference: LayerCost
    rel_error: dict[str, float]  # lut, bram18, uram, dsp, cycles


class ErrorSummary(BaseModel):
    """Median and worst relative error of one quantity over the nodes where it is not 0."""

    model_config = ConfigDict(frozen=True)

    nodes: int  # nodes where model or reference is non-zero
    median: float
    worst: float
    worst_node: str
    total_model: float
    total_reference: float

    @property
    def total_rel_error(self) -> float:
        return relative_error(self.total_model, self.total_reference)


class ErrorReport(BaseModel):
    """The cost model's error against a reference (FINN's estimate) per node and per resource."""

    model_config = ConfigDict(frozen=True)

    reference: ResourceSource
    nodes: list[NodeError]
    summary: dict[str, ErrorSummary]  # lut, bram18, uram, dsp, cycles
    by_node_type: dict[str, dict[str, ErrorSummary]]

    def describe(self) -> str:
        """One line per quantity: median / worst relative error and the worst node."""
        return "\n".join(
            f"{k:7s} median {100 * s.median:6.2f} %  worst {100 * s.worst:7.2f} % ({s.worst_node})"
            f"  total {s.total_model:g} vs {s.total_reference:g}"
            for k, s in self.summary.items())


QUANTITIES = (*BUDGETED, "cycles")


def _quantity(cost: LayerCost, q: str) -> float:
    return float(cost.cycles) if q == "cycles" else cost.resources.get(q)


def _summaries(rows: Sequence[NodeError]) -> dict[str, ErrorSummary]:
    out = {}
    for q in QUANTITIES:
        live = [r for r in rows if _quantity(r.model, q) or _quantity(r.reference, q)]
        errs = [r.rel_error[q] for r in live]
        worst = max(live, key=lambda r: r.rel_error[q], default=None)
        out[q] = ErrorSummary(
            nodes=len(live), median=median(errs) if errs else 0.0, worst=max(errs, default=0.0),
            worst_node=worst.name if worst else "",
            total_model=sum(_quantity(r.model, q) for r in rows),
            total_reference=sum(_quantity(r.reference, q) for r in rows))
    return out


def error_report(model_costs: Iterable[LayerCost], reference: dict[str, LayerCost],
                 source: ResourceSource = ResourceSource.FINN_ESTIMATE) -> ErrorReport:
    """Per-node and per-resource error of the model's costs against reference costs (by name)."""
    rows = []
    for m in model_costs:
        ref = reference[m.name]
        rel = {q: relative_error(_quantity(m, q), _quantity(ref, q)) for q in QUANTITIES}
        rows.append(NodeError(name=m.name, node_type=m.node_type, model=m, reference=ref,
                              rel_error=rel))
    by_type: dict[str, list[NodeError]] = {}
    for r in rows:
        by_type.setdefault(r.node_type, []).append(r)
    return ErrorReport(reference=source, nodes=rows, summary=_summaries(rows),
                       by_node_type={k: _summaries(v) for k, v in sorted(by_type.items())})


def compare_with_finn(model, part: str, calibration: Calibration | None = None,
                      from_geometry: bool = False) -> ErrorReport:
    """The cost model's error against FINN's estimate on every HW node of a folded model."""
    return error_report(model_cost(model, part, calibration, from_geometry).layers,
                        finn_node_estimates(model, part))
