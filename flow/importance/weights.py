"""The layer-importance measures by name, and the check of user weights for combining them."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flow.core.errors import ConfigError

MEASURES = ("quant", "hessian", "prune", "data_free")
MEASURE_DOC = {
    "quant": "val-loss increase, only this layer at low precision (PTQ)",
    "hessian": "Hutchinson trace of the loss Hessian / #params (HAWQ-v2)",
    "prune": "val-loss increase, smallest-|w| fraction of this layer zeroed",
    "data_free": "share of the network's parameters",
}


def check_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """Validate user weights of the measures (default: equal); ConfigError names the fault."""
    if weights is None:
        return {m: 1.0 / len(MEASURES) for m in MEASURES}
    if not isinstance(weights, Mapping) or not weights:
        raise ConfigError("importance weights: must be a mapping measure -> weight; "
                          f"measures: {list(MEASURES)}")
    unknown = sorted(set(weights) - set(MEASURES))
    if unknown:
        raise ConfigError(f"importance weights: unknown measures {unknown}; "
                          f"allowed: {list(MEASURES)}")
    out = {}
    for m, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w) or w < 0:
            raise ConfigError(f"importance weights.{m}: {w!r} is not a number >= 0")
        out[m] = float(w)
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"importance weights: they sum to {total:g}; they must sum to 1 ({out})")
    return {m: out.get(m, 0.0) for m in MEASURES if m in out}
