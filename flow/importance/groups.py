"""Coupled channel pruning: the units of layers that keep one channel set.

A residual add sums its inputs channel by channel, so every layer feeding it (transitively through
adds, pools and identity skips: `arch.channel_groups()`) keeps the same output channels; a
depthwise convolution filters each input channel on its own, so it keeps exactly its producer's
channels (`arch.channel_source`). The layers tied by either rule form one pruning unit; a unit
holding the classifier, or a depthwise layer fed by the network input, keeps every channel. On a
chain every hidden layer is a unit of its own, and everything below reduces to the per-layer rule.

Neither seed paper says how coupled channels are chosen: qsparse ("Learning Low-Precision
Structured Subnetworks Using Joint Layerwise Channel Pruning and Uniform Quantization") prunes
ResNet-20/32/56 and MobileNetV2 and AQP ("Adaptive Quantization and Pruning of Deep Neural
Networks via Layer Importance Estimation") ResNet18/34, both describing per-layer importance only.
densiflow scores channel c of a unit U as S_U(c) = Σ_{l∈U} s_l(c) / Σ_c' s_l(c'), the sum of its
members' normalised scores (each member counts equally whatever its activation scale; the
group-level importance of "DepGraph: Towards Any Structural Pruning", summed over a group), and
every member keeps the same best-scored channels.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from flow.models import Architecture
    from flow.recipe.plan import CompressionPlan

Keep = tuple[int, ...] | None  # kept channels of a layer; None: all


@dataclass(frozen=True)
class ChannelUnit:
    """Layers whose kept output channels are one set; the first (in layer order) names it."""

    layers: tuple[str, ...]
    channels: int  # full width of every member
    fixed: bool = False  # keeps every channel (holds the classifier or follows the input)

    @property
    def name(self) -> str:
        return self.layers[0]

    @property
    def label(self) -> str:
        """The unit as a report shows it: `a` alone, `a = b = c` when coupled."""
        return " = ".join(self.layers)


def channel_units(arch: Architecture) -> list[ChannelUnit]:
    """Every layer in exactly one unit (`arch.channel_groups()`, which ties a depthwise layer to
    its producer too, and every other layer alone), in the order of each unit's first layer."""
    grouped = {name: group for group in arch.channel_groups() for name in group}
    fixed = {arch.layer_names[-1]} | {
        s.name for s in arch.layers if s.depthwise and arch.channel_source(s.name) is None}
    units: dict[tuple[str, ...], None] = {}
    for name in arch.layer_names:
        units.setdefault(tuple(sorted(grouped.get(name, (name,)), key=arch.layer_names.index)))
    width = {s.name: s.out for s in arch.layers}
    return [ChannelUnit(names, width[names[0]], any(n in fixed for n in names)) for names in units]


def prunable_units(arch: Architecture) -> list[ChannelUnit]:
    """The units whose channels may be removed."""
    return [u for u in channel_units(arch) if not u.fixed]


def coupled_labels(arch: Architecture) -> list[str]:
    """The units of two or more layers, as reports show them (`stem = layer1.0.conv2`)."""
    return [u.label for u in channel_units(arch) if len(u.layers) > 1]


def unit_of(units: Sequence[ChannelUnit], layer: str) -> ChannelUnit:
    """The unit holding `layer`."""
    return next(u for u in units if layer in u.layers)


def unit_scores(unit: ChannelUnit, scores: Mapping[str, Sequence[float]]) -> np.ndarray:
    """S_U(c) = Σ_l s_l(c) / Σ_c' s_l(c') over the members that have scores (negatives as 0; a
    member scoring 0 everywhere counts equally for every channel)."""
    total = np.zeros(unit.channels)
    for name in unit.layers:
        if name in scores:
            s = np.clip(np.asarray(scores[name], dtype=np.float64), 0.0, None)
            total += s / s.sum() if s.sum() > 0 else np.full(unit.channels, 1.0 / unit.channels)
    return total


def ranking(scores: Sequence[float]) -> list[int]:
    """Channel indices, best score first (ties: the lower index first)."""
    s = np.asarray(scores, dtype=np.float64)
    return [int(c) for c in np.lexsort((np.arange(len(s)), -s))]


def top_channels(scores: Sequence[float], n: int) -> tuple[int, ...]:
    """The n best-scored channels, in index order."""
    return tuple(sorted(ranking(scores)[:n]))


def coupled_keep(units: Sequence[ChannelUnit], scores: Mapping[str, Sequence[float]],
                 counts: Mapping[str, int]) -> dict[str, Keep]:
    """Kept channels of every layer: unit u keeps its counts[u.name] best channels by S_U in every
    member; a unit not in `counts`, fixed, or at full width keeps all (None)."""
    out: dict[str, Keep] = {}
    for u in units:
        n = counts.get(u.name, u.channels)
        keep = None if u.fixed or n >= u.channels else top_channels(unit_scores(u, scores), n)
        out.update(dict.fromkeys(u.layers, keep))
    return out


def with_unit_keep(plan: CompressionPlan, unit: ChannelUnit, keep: Keep) -> CompressionPlan:
    """The plan with every member of `unit` keeping `keep`."""
    for name in unit.layers:
        plan = plan.with_layer(name, keep=keep)
    return plan


def with_keep(plan: CompressionPlan, keep: Mapping[str, Keep]) -> CompressionPlan:
    """The plan with each named layer's kept channels replaced."""
    for name, channels in keep.items():
        plan = plan.with_layer(name, keep=channels)
    return plan
