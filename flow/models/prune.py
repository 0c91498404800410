"""Unstructured magnitude pruning held by fixed masks (AQP: |w| <= Z_T(l) = k(l)·σ(l) is zeroed).

In a built network the zeros are held by `torch.nn.utils.prune.custom_from_mask` (the layer's
`weight` becomes `weight_orig * weight_mask`), so QAT fine-tuning cannot revive them;
`make_pruning_permanent` folds the mask back into a plain `weight` before saving or export, so
the QONNX graph carries the zeros as ordinary weights.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from flow.recipe.plan import CompressionPlan


def weight_threshold(w: torch.Tensor, k: float) -> float:
    """Z_T = k·σ(w), σ the (population) standard deviation of all the layer's weights."""
    return float(k) * float(w.detach().double().std(unbiased=False))


def unstructured_mask(w: torch.Tensor, k: float) -> torch.Tensor:
    """1 where |w| > k·σ(w) (kept), 0 where |w| <= k·σ(w) (pruned); w's shape and dtype."""
    return (w.detach().abs() > weight_threshold(w, k)).to(w.dtype)


def apply_unstructured_pruning(model: nn.Module, plan: CompressionPlan) -> nn.Module:
    """Mask every layer whose plan has prune_k > 0 (in place); the zeros survive training."""
    for name, lp in plan.layers.items():
        layer = model.blocks[name][0]
        if prune.is_pruned(layer) and hasattr(layer, "weight_mask"):
            prune.remove(layer, "weight")  # re-masking: start from the current (masked) weights
        if lp.prune_k > 0:
            prune.custom_from_mask(layer, "weight", unstructured_mask(layer.weight, lp.prune_k))
    return model


def make_pruning_permanent(model: nn.Module) -> nn.Module:
    """Fold every mask into a plain `weight` Parameter (zeros stay); call before export."""
    for block in model.blocks.values():
        layer = block[0]
        if hasattr(layer, "weight_mask"):
            prune.remove(layer, "weight")
    return model
