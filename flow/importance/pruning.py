"""Pruning rules shared by importance estimation, AQP and the fixed baselines.

Unstructured (AQP's |w| <= k·σ masks) lives in flow.models.prune, where plans are applied.

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

from flow.importance.groups import top_channels


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
    n_keep = max(min_keep, len(scores) - round(prune_fraction * len(scores)))
    return top_channels(scores, n_keep)
