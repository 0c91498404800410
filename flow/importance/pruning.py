"""Pruning rules shared by importance estimation, AQP and the fixed baselines.

Unstructured (AQP, the paper): in layer l, weights with |w| <= Z_T(l) = k(l)·σ(l) are zeroed,
σ(l) the standard deviation of the layer's weights (k = 0 keeps everything but exact zeros, k = 3
removes ~99.7 % of Gaussian weights). In a built network the zeros are held by a fixed mask
(`torch.nn.utils.prune.custom_from_mask`: the layer's `weight` becomes `weight_orig * weight_mask`),
so QAT fine-tuning cannot revive them; `make_pruning_permanent` folds the mask into a plain
`weight` Parameter again before export, so the QONNX graph carries the zeros as ordinary weights.
The mask is computed from the weights the layer holds when it is applied, i.e. right after
`transfer_weights` from the float network: the same float weights give the same mask.

Structured (channels): a layer's channel scores s_c (activation l1) are thresholded with the
same k·σ rule, measured from the weakest channel: channels with s_c < min(s) + k·σ(s) are
removed, σ(s) the standard deviation of the layer's scores. Taking the threshold about zero
(s_c <= k·σ, as for the zero-centred weights) does not work for channels: after BatchNorm +
ReLU the scores are all of similar size (coefficient of variation ~0.1 on digits_cnn), so k·σ
stays below every score until k ~ 10. From the minimum, the rule sweeps like the weight rule:
k = 0 removes nothing (strict <), k = 1 the weakest 5-30 %, k = 2 about half, k = 3 most (75-90 %
on digits_cnn; for normally distributed scores, min ~ mean - 2σ, so k = 3 cuts at mean + σ,
~84 %); the `min_keep` strongest channels are always kept.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn.utils import prune

from flow.models import Net
from flow.plan import CompressionPlan


def weight_threshold(w: torch.Tensor, k: float) -> float:
    """Z_T = k·σ(w), σ the (population) standard deviation of all the layer's weights."""
    return float(k) * float(w.detach().double().std(unbiased=False))


def unstructured_mask(w: torch.Tensor, k: float) -> torch.Tensor:
    """1 where |w| > k·σ(w) (kept), 0 where |w| <= k·σ(w) (pruned); w's shape and dtype."""
    return (w.detach().abs() > weight_threshold(w, k)).to(w.dtype)


def apply_unstructured_pruning(model: Net, plan: CompressionPlan) -> Net:
    """Mask every layer whose plan has prune_k > 0 (in place); the zeros survive training."""
    for name, lp in plan.layers.items():
        layer = model.blocks[name][0]
        if prune.is_pruned(layer) and hasattr(layer, "weight_mask"):
            prune.remove(layer, "weight")  # re-masking: start from the current (masked) weights
        if lp.prune_k > 0:
            prune.custom_from_mask(layer, "weight", unstructured_mask(layer.weight, lp.prune_k))
    return model


def make_pruning_permanent(model: Net) -> Net:
    """Fold every mask into a plain `weight` Parameter (zeros stay); call before export."""
    for block in model.blocks.values():
        layer = block[0]
        if hasattr(layer, "weight_mask"):
            prune.remove(layer, "weight")
    return model


def magnitude_prune_fraction(w: torch.Tensor, fraction: float) -> torch.Tensor:
    """A copy of w with its smallest-|w| `fraction` of entries set to zero (ties by position)."""
    flat = w.detach().flatten().clone()
    n = round(fraction * flat.numel())
    if n > 0:
        flat[torch.argsort(flat.abs(), stable=True)[:n]] = 0
    return flat.view_as(w)


def structured_keep(scores: Sequence[float], k: float, min_keep: int = 2) -> tuple[int, ...]:
    """Kept channel indices: s_c >= min(s) + k·σ(s) (all for k = 0), at least the `min_keep`
    strongest."""
    s = np.asarray(scores, dtype=np.float64)
    if k <= 0:
        return tuple(range(len(s)))
    keep = set(np.flatnonzero(s >= s.min() + k * s.std()).tolist())
    if len(keep) < min(min_keep, len(s)):
        strongest = np.lexsort((np.arange(len(s)), -s))[: min(min_keep, len(s))]
        keep |= set(strongest.tolist())
    return tuple(sorted(int(c) for c in keep))


def keep_strongest_fraction(scores: Sequence[float], prune_fraction: float,
                            min_keep: int = 1) -> tuple[int, ...]:
    """Kept channels when the weakest `prune_fraction` of them (by score) are removed."""
    s = np.asarray(scores, dtype=np.float64)
    n_keep = max(min_keep, len(s) - round(prune_fraction * len(s)))
    return tuple(sorted(int(c) for c in np.lexsort((np.arange(len(s)), -s))[:n_keep]))
