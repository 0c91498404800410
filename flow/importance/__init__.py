"""Importance estimation: per layer (several measures, combined), per channel, rank agreement;
channel units (coupled layers pruned by one set)."""
from flow.importance.channel import activation_l1, channel_importance, weight_l1
from flow.importance.groups import ChannelUnit, channel_units, coupled_keep, prunable_units
from flow.importance.layer import LayerImportance, layer_importance
from flow.importance.pruning import structured_keep
from flow.importance.rank import compare, compare_measures, kendall_tau, levenshtein, rank_order
from flow.importance.weights import MEASURES, check_weights

__all__ = [
    "MEASURES",
    "ChannelUnit",
    "LayerImportance",
    "activation_l1",
    "channel_importance",
    "channel_units",
    "check_weights",
    "compare",
    "compare_measures",
    "coupled_keep",
    "kendall_tau",
    "layer_importance",
    "levenshtein",
    "prunable_units",
    "rank_order",
    "structured_keep",
    "weight_l1",
]
