"""Agreement between two importance estimates: Kendall's tau and the Levenshtein distance.

Both as in section 3 of "Structured quantization-aware pruning" (qsparse), eqs. (7)-(10):

- Kendall's tau over the two score vectors mu, nu of the same n items (channels of a layer, or
  layers of a network), eq. (7):
  tau = 2 / (n (n-1)) * sum_{k<j} sign(mu_k - mu_j) sign(nu_k - nu_j), with sign(0) = 0 (eq. 8).
  Ties therefore count zero: this is tau-a, not scipy's default tau-b (the two agree when
  neither vector has ties).
- The Levenshtein distance between the two rank orderings r_mu, r_nu (item indices sorted from
  most to least important, ties broken by index), eqs. (9)-(10): the minimum number of
  single-element insertions, deletions and substitutions turning one sequence into the other,
  computed with the iterative two-row dynamic programme instead of the exponential recursion.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from flow.core.errors import ConfigError


def kendall_tau(mu: Sequence[float], nu: Sequence[float]) -> float:
    """Eq. (7): mean over all pairs k<j of sign(mu_k - mu_j) * sign(nu_k - nu_j)."""
    a, b = np.asarray(mu, dtype=np.float64), np.asarray(nu, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ConfigError(
            f"kendall_tau: need two vectors of the same length, got {a.shape}, {b.shape}")
    n = len(a)
    if n < 2:
        raise ConfigError(f"kendall_tau: need at least 2 items, got {n}")
    k, j = np.triu_indices(n, k=1)  # every pair k < j once
    total = np.sum(np.sign(a[k] - a[j]) * np.sign(b[k] - b[j]))
    return float(2.0 * total / (n * (n - 1)))


def rank_order(scores: Sequence[float]) -> list[int]:
    """Item indices from most to least important (descending score; ties by lower index first)."""
    s = np.asarray(scores, dtype=np.float64)
    return [int(i) for i in np.lexsort((np.arange(len(s)), -s))]


def levenshtein(r: Sequence, q: Sequence) -> int:
    """Eqs. (9)-(10), iteratively: fewest single-element edits turning sequence r into q."""
    r, q = list(r), list(q)
    prev = list(range(len(q) + 1))  # distance from the empty prefix of r to each prefix of q
    for i, ri in enumerate(r, start=1):
        cur = [i] + [0] * len(q)
        for j, qj in enumerate(q, start=1):
            if ri == qj:
                cur[j] = prev[j - 1]
            else:
                cur[j] = 1 + min(prev[j], cur[j - 1], prev[j - 1])  # delete, insert, substitute
        prev = cur
    return prev[-1]


def compare(mu: Sequence[float], nu: Sequence[float]) -> dict:
    """Tau of the scores and Levenshtein distance of their rank orderings (also normalised by n)."""
    lev = levenshtein(rank_order(mu), rank_order(nu))
    return {"n": len(mu), "tau": kendall_tau(mu, nu), "lev": lev, "lev_norm": lev / len(mu)}


def compare_measures(scores_a: Mapping[str, float | Sequence[float]],
                     scores_b: Mapping[str, float | Sequence[float]]) -> dict:
    """Compare two importance estimates given per layer.

    Values are either one number per layer (a layer-importance measure) or a list per layer (a
    channel-importance measure). Returns
    - "layers": tau and lev over the layers, of the numbers, or of each layer's mean channel score
      when lists are given (needs >= 2 layers);
    - "per_layer": {layer: {n, tau, lev, lev_norm}} comparing the channel scores of each layer
      (lists only; layers with fewer than 2 channels are skipped).
    Both mappings must name the same layers.
    """
    if set(scores_a) != set(scores_b):
        raise ConfigError(
            f"compare_measures: the two estimates name different layers: "
            f"{sorted(set(scores_a) ^ set(scores_b))} appear in only one"
        )
    names = list(scores_a)
    per_layer: dict[str, dict] = {}
    layer_a, layer_b = [], []
    for name in names:
        a, b = scores_a[name], scores_b[name]
        if np.ndim(a) != np.ndim(b):
            raise ConfigError(
                f"compare_measures: layer {name}: one estimate is a list, the other not")
        if np.ndim(a) == 0:
            layer_a.append(float(a))
            layer_b.append(float(b))
            continue
        if len(a) != len(b):
            raise ConfigError(f"compare_measures: layer {name}: {len(a)} vs {len(b)} channels")
        if len(a) >= 2:
            per_layer[name] = compare(a, b)
        layer_a.append(float(np.mean(a)))
        layer_b.append(float(np.mean(b)))
    out: dict = {"per_layer": per_layer}
    out["layers"] = compare(layer_a, layer_b) if len(names) >= 2 else None
    return out
