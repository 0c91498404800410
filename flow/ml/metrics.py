"""Size metrics of a plan on an architecture: parameters, Mbit, AQP's average bit-width, density.

Conventions (stated once, used by every report; units in the field names: `_mbit` = 10^6 bits,
`_mbyte` = 10^6 bytes, the papers' "MB"):
- weight_mbit: every kept weight at its bit-width, dense storage, as FINN deploys it;
- weight_mbit_sparse: nonzero weights only, each with a ceil(log2(fan-in))-bit column index (CSR),
  what unstructured pruning saves where the storage is sparse (FINN's is not);
- act_mbit (qsparse's operating memory, with weights): every quantizer's output per frame at its
  width: the input, every hidden layer's output (a layer without activation, feeding residual
  adds, at the width of the add's shared quantizer) and every residual add's output; pools and
  flattening carry values already counted, the weightless nodes hold no weights; the
  classifier's logits are not requantized and not counted;
- average bit-width b̄ = Σ b(l)·S(l)·N_P(l) (AQP), with N_P(l) the layer's share of the FULL
  architecture's parameters and S(l) the fraction of those it still holds (channels and zeros
  removed), so both quantization and pruning lower it; compression ratio = 32 / b̄;
- performance density = test accuracy in percent per Mbit of weights + activations.
"""
from __future__ import annotations

import math

import torch
from pydantic import BaseModel

from flow.models import Architecture, LayerGeometry, Net, OpSpec
from flow.recipe.plan import CompressionPlan


class LayerMetrics(BaseModel):
    """Sizes of one layer under a plan."""

    layer: str
    kind: str
    in_ch: int
    out_ch: int
    full_out_ch: int
    weight_bits: int
    act_bits: int | None
    params: int
    nonzero: int
    macs: int
    weight_mbit: float
    weight_mbit_sparse: float
    act_mbit: float  # the layer's output at the width of the quantizer after it
    avg_bits_share: float  # b(l)·S(l)·N_P(l)


class PlanTotals(BaseModel):
    """Whole-network sizes under a plan."""

    params: int
    full_params: int
    nonzero: int
    macs: int
    weight_mbit: float
    weight_mbit_sparse: float
    act_mbit: float
    total_mbit: float
    avg_bits: float
    compression_ratio: float

    @property
    def param_size_mbyte(self) -> float:
        """The AQP paper's "Parameters Size (MB)": b̄ × full parameter count / 8 bytes."""
        return self.avg_bits * self.full_params / 8 / 1e6


class PlanMetrics(BaseModel):
    layers: list[LayerMetrics]
    totals: PlanTotals


def plan_metrics(arch: Architecture, plan: CompressionPlan,
                 model: Net | None = None) -> PlanMetrics:
    """Per-layer rows and totals; nonzero weights are counted in `model` when given."""
    full_params = sum(g.params for g in arch.geometry())
    full_out = {s.name: s.out for s in arch.layers}
    rows = []
    for geo in arch.geometry(plan):
        lp = plan.layers[geo.name]
        nonzero = (
            int(torch.count_nonzero(model.blocks[geo.name][0].weight).item())
            if model is not None else geo.params
        )
        rows.append(LayerMetrics(
            layer=geo.name, kind=geo.kind, in_ch=geo.in_ch, out_ch=geo.out_ch,
            full_out_ch=full_out[geo.name], weight_bits=lp.weight_bits, act_bits=lp.act_bits,
            params=geo.params, nonzero=nonzero, macs=geo.macs,
            weight_mbit=geo.params * lp.weight_bits / 1e6,
            weight_mbit_sparse=nonzero * (lp.weight_bits + _index_bits(geo)) / 1e6,
            act_mbit=geo.out_elems * (output_bits(arch, plan, geo.name) or 0) / 1e6,
            avg_bits_share=lp.weight_bits * nonzero / full_params,
        ))
    input_mbit = math.prod(arch.in_shape) * plan.input_bits / 1e6
    weight_mbit = sum(r.weight_mbit for r in rows)
    shapes = arch.shapes(plan)
    add_mbit = sum(shapes[n.name].ch * shapes[n.name].hw ** 2
                   * plan.layers[arch.add_bits_source(n.name)].act_bits
                   for n in arch.nodes if isinstance(n, OpSpec) and n.kind == "add") / 1e6
    act_mbit = input_mbit + sum(r.act_mbit for r in rows) + add_mbit
    avg_bits = sum(r.avg_bits_share for r in rows)
    totals = PlanTotals(
        params=sum(r.params for r in rows), full_params=full_params,
        nonzero=sum(r.nonzero for r in rows), macs=sum(r.macs for r in rows),
        weight_mbit=weight_mbit, weight_mbit_sparse=sum(r.weight_mbit_sparse for r in rows),
        act_mbit=act_mbit, total_mbit=weight_mbit + act_mbit, avg_bits=avg_bits,
        compression_ratio=32.0 / avg_bits,
    )
    return PlanMetrics(layers=rows, totals=totals)


def output_bits(arch: Architecture, plan: CompressionPlan, name: str) -> int | None:
    """The width of a layer's quantized output: its act_bits, or for a layer without activation
    (it feeds residual adds) the bits of the add's shared quantizer; None for the classifier."""
    spec = arch.node(name)
    if spec is arch.layers[-1]:
        return None
    if spec.act is not None:
        return plan.layers[name].act_bits
    return plan.layers[arch.add_bits_source(arch.consumers(name)[0])].act_bits


def performance_density(accuracy: float, total_mbit: float) -> float:
    """Accuracy in percent per Mbit of weights + activations."""
    return 100.0 * accuracy / total_mbit


def _index_bits(geo: LayerGeometry) -> int:
    fan_in = geo.in_ch // geo.groups * geo.kernel * geo.kernel
    return max(1, math.ceil(math.log2(fan_in)))
