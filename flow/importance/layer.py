"""Layer importance: several measures, each normalised over the layers, and their weighted sum.

Measures (raw value per layer, then normalised to sum to 1 over the layers):
- "quant": quantization sensitivity, the validation-loss increase when only that layer's weights
  and output activations drop to `low_bits` (activations floored at `min_act_bits`) while every
  other layer stays at `high_bits`, post-training (weights from the float network, activation
  scales calibrated), against the all-`high_bits` network;
- "hessian": second-order sensitivity as HAWQ-v2: the Hutchinson estimate of the trace of the
  loss Hessian w.r.t. the layer's weights, E_v[v^T H v] with Rademacher v and Hessian-vector
  products by double backprop, on a training subset with the float network in eval mode, divided
  by the layer's parameter count (HAWQ-v2's average trace: a big layer is not important merely
  for being big; the "data_free" measure covers size). One Hessian-vector product over all layers
  at once gives every layer's estimate: v_l^T (H v)_l = v_l^T H_ll v_l + cross terms whose
  expectation is 0 for independent v;
- "prune": pruning sensitivity, the validation-loss increase when the smallest-|w| `prune_fraction`
  of that layer's float weights are zeroed (the others untouched);
- "data_free": the layer's share of the network's parameters, N_P(l).

Negative loss increases (noise) count as 0. A measure that is 0 on every layer normalises to equal
shares. The combined importance is sum_m weight_m · measure_m(l); the weights default to equal (as
the AQP paper) and must name known measures and sum to 1.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flow.core.io import atomic_write_json
from flow.importance.pruning import magnitude_prune_fraction
from flow.importance.weights import MEASURE_DOC, check_weights
from flow.ml.train import mean_loss
from flow.models import Architecture, Net, ptq_model
from hw_models.rules import input_bits


@dataclass
class LayerImportance:
    """Every measure per layer (raw and normalised), the weights and the combined score."""

    layers: list[str]
    raw: dict[str, list[float]]
    normalised: dict[str, list[float]]
    weights: dict[str, float]
    combined: list[float]
    settings: dict = field(default_factory=dict)

    def score(self, name: str) -> float:
        """Combined importance of one layer."""
        return self.combined[self.layers.index(name)]

    def order(self) -> list[str]:
        """Layers from least to most important (AQP's processing order); ties keep layer order."""
        return [self.layers[i] for i in np.argsort(np.asarray(self.combined), kind="stable")]

    def rows(self) -> list[dict]:
        """One plain row per layer: normalised measures, raw values, combined score, rank."""
        rank = {name: i + 1 for i, name in enumerate(reversed(self.order()))}  # 1 = most important
        out = []
        for i, name in enumerate(self.layers):
            row = {"layer": name}
            row.update({m: self.normalised[m][i] for m in self.normalised})
            row.update({f"{m}_raw": self.raw[m][i] for m in self.raw})
            row["combined"] = self.combined[i]
            row["rank"] = rank[name]
            out.append(row)
        return out

    def to_dict(self) -> dict:
        return {
            "layers": self.layers,
            "weights": self.weights,
            "measures": {m: MEASURE_DOC[m] for m in self.normalised},
            "raw": self.raw,
            "normalised": self.normalised,
            "combined": self.combined,
            "order_least_important_first": self.order(),
            "settings": self.settings,
            "rows": self.rows(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> LayerImportance:
        return cls(data["layers"], data["raw"], data["normalised"], data["weights"],
                   data["combined"], data.get("settings", {}))

    def save(self, path: str | Path) -> None:
        atomic_write_json(Path(path), self.to_dict())

    def table(self):
        """A rich Table of the normalised measures and the combined score per layer."""
        from rich.table import Table

        table = Table(title="Layer importance (normalised over layers)")
        table.add_column("layer")
        for m in self.normalised:
            table.add_column(f"{m} (w={self.weights[m]:.2f})", justify="right")
        table.add_column("combined", justify="right")
        table.add_column("rank", justify="right")
        for row in self.rows():
            table.add_row(row["layer"], *(f"{row[m]:.3f}" for m in self.normalised),
                          f"{row['combined']:.3f}", str(row["rank"]))
        return table


def normalise(values: Sequence[float]) -> list[float]:
    """Clip at 0 and scale to sum 1 (equal shares when all are 0)."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0), 0.0, None)
    total = v.sum()
    return (v / total).tolist() if total > 0 else [1.0 / len(v)] * len(v)




def quant_sensitivity(arch: Architecture, float_model: Net, x_val, y_val, calib_x, input_bits: int,
                      low_bits: int = 2, high_bits: int = 8, min_act_bits: int = 2) -> list[float]:
    """Val-loss increase per layer when only that layer goes to `low_bits` (PTQ)."""
    ref_plan = arch.uniform_plan(high_bits, high_bits, input_bits)
    ref = mean_loss(ptq_model(arch, float_model, ref_plan, calib_x), x_val, y_val)
    out = []
    for name in arch.layer_names:
        act = ref_plan.layers[name].act_bits
        plan = ref_plan.with_layer(name, weight_bits=low_bits,
                                   act_bits=None if act is None else max(low_bits, min_act_bits))
        out.append(mean_loss(ptq_model(arch, float_model, plan, calib_x), x_val, y_val) - ref)
    return out


def hutchinson_trace(loss: torch.Tensor, params: Sequence[torch.Tensor], n_samples: int = 100,
                     seed: int = 0) -> list[float]:
    """Hutchinson estimates of tr(H_pp) for each parameter tensor p: mean of v^T H v over
    Rademacher v, with H v from a second backward pass through the gradient graph."""
    grads = torch.autograd.grad(loss, list(params), create_graph=True)
    gen = torch.Generator().manual_seed(seed)
    sums = [0.0] * len(params)
    for _ in range(n_samples):
        vs = [(torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(p.dtype) for p in params]
        hvs = torch.autograd.grad(grads, list(params), grad_outputs=vs, retain_graph=True)
        for i, (v, hv) in enumerate(zip(vs, hvs)):
            sums[i] += float((v * hv).sum())
    return [s / n_samples for s in sums]


def hessian_trace(float_model: Net, x: torch.Tensor, y: torch.Tensor, n_samples: int = 100,
                  seed: int = 0) -> list[float]:
    """Per-layer Hutchinson trace of the loss Hessian (float network, eval mode), not normalised."""
    model = copy.deepcopy(float_model).eval()
    params = [model.blocks[name][0].weight for name in model.arch.layer_names]
    loss = nn.functional.cross_entropy(model(x), y)
    return hutchinson_trace(loss, params, n_samples, seed)


@torch.no_grad()
def prune_sensitivity(float_model: Net, x_val, y_val, fraction: float = 0.5) -> list[float]:
    """Val-loss increase per layer when its smallest-|w| `fraction` of weights are zeroed."""
    model = copy.deepcopy(float_model).eval()
    ref = mean_loss(model, x_val, y_val)
    out = []
    for name in model.arch.layer_names:
        weight = model.blocks[name][0].weight
        saved = weight.detach().clone()
        weight.copy_(magnitude_prune_fraction(saved, fraction))
        out.append(mean_loss(model, x_val, y_val) - ref)
        weight.copy_(saved)
    return out


def data_free(arch: Architecture) -> list[float]:
    """Parameter count per layer of the full architecture (normalised: its share N_P(l))."""
    return [float(g.params) for g in arch.geometry()]


def layer_importance(arch: Architecture, float_model: Net, data, *,
                     weights: Mapping[str, float] | None = None, low_bits: int = 2,
                     high_bits: int = 8, min_act_bits: int = 2, prune_fraction: float = 0.5,
                     hutchinson_samples: int = 32, calib_samples: int = 256,
                     hessian_samples: int = 256, seed: int = 0) -> LayerImportance:
    """Every measure with a nonzero weight, normalised, and the combined score, per layer.

    `data` is a flow.ml.data.Dataset: loss-based measures use the val split, the Hessian and the
    activation calibration use the first samples of a seeded permutation of the train split.
    """
    w = check_weights(weights)
    calib_x, _ = data.subset("train", calib_samples, seed)
    hx, hy = data.subset("train", hessian_samples, seed)
    raw: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    for m in w:
        t0 = time.perf_counter()
        if m == "quant":
            raw[m] = quant_sensitivity(arch, float_model, data.x_val, data.y_val, calib_x,
                                       input_bits(data.input_bits), low_bits, high_bits,
                                       min_act_bits)
        elif m == "hessian":
            traces = hessian_trace(float_model, hx, hy, hutchinson_samples, seed)
            raw[m] = [t / g.params for t, g in zip(traces, arch.geometry())]
        elif m == "prune":
            raw[m] = prune_sensitivity(float_model, data.x_val, data.y_val, prune_fraction)
        else:
            raw[m] = data_free(arch)
        seconds[m] = round(time.perf_counter() - t0, 3)
    normalised = {m: normalise(v) for m, v in raw.items()}
    combined = np.zeros(len(arch.layer_names))
    for m, wm in w.items():
        combined += wm * np.asarray(normalised[m])
    settings = {
        "low_bits": low_bits, "high_bits": high_bits, "min_act_bits": min_act_bits,
        "prune_fraction": prune_fraction, "hutchinson_samples": hutchinson_samples,
        "hessian_samples": hessian_samples, "calib_samples": calib_samples, "seed": seed,
        "seconds": seconds,
    }
    return LayerImportance(list(arch.layer_names), raw, normalised, w, combined.tolist(), settings)
