"""Size metrics of a plan on an architecture: parameters, Mb, AQP's average bit-width, density.

Conventions (stated once, used by every report):
- weight Mb: every kept weight at its bit-width, dense storage, as FINN deploys it;
- sparse weight Mb: nonzero weights only, each with a ceil(log2(fan-in))-bit column index (CSR),
  what unstructured pruning saves where the storage is sparse (FINN's is not);
- activation Mb (qsparse's operating memory, with weights): the input and every hidden layer's
  output per frame at their quantized widths; the classifier's logits are not requantized and not
  counted;
- average bit-width b̄ = Σ b(l)·S(l)·N_P(l) (AQP), with N_P(l) the layer's share of the FULL
  architecture's parameters and S(l) the fraction of those it still holds (channels and zeros
  removed), so both quantization and pruning lower it; compression ratio = 32 / b̄.
"""
from __future__ import annotations

import math

import torch

from flow.models import Architecture, Net
from flow.plan import CompressionPlan


def plan_metrics(arch: Architecture, plan: CompressionPlan, model: Net | None = None) -> dict:
    """Per-layer rows and totals; nonzero weights are counted in `model` when given."""
    full = {g.name: g.params for g in arch.geometry()}
    full_params = sum(full.values())
    rows = []
    for geo in arch.geometry(plan):
        lp = plan.layers[geo.name]
        nonzero = (
            int(torch.count_nonzero(model.blocks[geo.name][0].weight).item())
            if model is not None else geo.params
        )
        act_bits = lp.act_bits or 0
        rows.append({
            "layer": geo.name,
            "kind": geo.kind,
            "in_ch": geo.in_ch,
            "out_ch": geo.out_ch,
            "full_out_ch": next(s.out for s in arch.layers if s.name == geo.name),
            "weight_bits": lp.weight_bits,
            "act_bits": lp.act_bits,
            "params": geo.params,
            "nonzero": nonzero,
            "macs": geo.macs,
            "weight_mb": geo.params * lp.weight_bits / 1e6,
            "weight_mb_sparse": nonzero * (lp.weight_bits + _index_bits(geo)) / 1e6,
            "act_mb": geo.out_elems * act_bits / 1e6,
            "avg_bits_share": lp.weight_bits * nonzero / full_params,
        })
    input_mb = math.prod(arch.in_shape) * plan.input_bits / 1e6
    weight_mb = sum(r["weight_mb"] for r in rows)
    act_mb = input_mb + sum(r["act_mb"] for r in rows)
    avg_bits = sum(r["avg_bits_share"] for r in rows)
    totals = {
        "params": sum(r["params"] for r in rows),
        "full_params": full_params,
        "nonzero": sum(r["nonzero"] for r in rows),
        "macs": sum(r["macs"] for r in rows),
        "weight_mb": weight_mb,
        "weight_mb_sparse": sum(r["weight_mb_sparse"] for r in rows),
        "act_mb": act_mb,
        "total_mb": weight_mb + act_mb,
        "avg_bits": avg_bits,
        "compression_ratio": 32.0 / avg_bits,
    }
    return {"layers": rows, "totals": totals}


def performance_density(accuracy: float, total_mb: float) -> float:
    """Accuracy in percent per Mb of weights + activations."""
    return 100.0 * accuracy / total_mb


def _index_bits(geo) -> int:
    fan_in = geo.in_ch * geo.kernel * geo.kernel
    return max(1, math.ceil(math.log2(fan_in)))
