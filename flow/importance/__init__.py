"""Importance estimation: per layer (several measures, combined), per channel, rank agreement."""
from flow.importance.channel import activation_l1, channel_importance, weight_l1
from flow.importance.layer import LayerImportance, layer_importance
from flow.importance.pruning import structured_keep
from flow.importance.rank import compare, compare_measures, kendall_tau, levenshtein, rank_order
from flow.importance.weights import MEASURES, check_weights

__all__ = [
    "MEASURES",
    "LayerImportance",
    "activation_l1",
    "channel_importance",
    "check_weights",
    "compare",
    "compare_measures",
    "kendall_tau",
    "layer_importance",
    "levenshtein",
    "rank_order",
    "structured_keep",
    "weight_l1",
]
