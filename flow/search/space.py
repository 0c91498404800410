"""The search space: per-layer weight bits, activation bits and kept output channels.

A point of the space (a trial's `choices`) names, for every layer l: `l.w` (weight bits), `l.a`
(output activation bits; not for the classifier, whose logits are not requantized, nor for a
layer whose output only a residual add's shared quantizer requantizes at its main branch's
bits, e.g. a projection shortcut: it takes that branch's `.a`) and `l.keep`
(the share f of output channels kept; not for the classifier, which keeps every class).

Channels are removed in the order of their importance: each hidden layer's channels are ranked
once by activation l1 (flow.importance.channel, on the seeded calibration subset), and a layer
keeps the max(min_keep, round(f·C_l)) best-ranked ones. A plan's `keep` is therefore a prefix of
one fixed ranking, and the network is cut physically (flow.models.transfer_weights), so FINN
builds smaller layers.

On a graph network the keep share is chosen per channel unit (flow.importance.groups), not per
layer: the layers feeding one residual add, and a depthwise layer with its producer, keep one
channel set, ranked by the sum of the members' normalised activation l1. The unit's parameter is
named by its first layer (`stem.keep` for the stem and every block output added to it); a
depthwise layer has no `.keep` of its own.
"""
from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict

from flow.importance.channel import activation_l1
from flow.importance.groups import prunable_units, ranking, unit_scores
from flow.models import Architecture, Net
from flow.recipe.plan import CompressionPlan

Choices = dict[str, int | float]


def channel_ranking(float_model: Net, calib_x: torch.Tensor) -> dict[str, list[int]]:
    """Each prunable unit's channels, most important (highest summed normalised activation l1)
    first, keyed by the unit's name."""
    scores = activation_l1(float_model, calib_x)
    return {u.name: ranking(unit_scores(u, scores)) for u in prunable_units(float_model.arch)}


def _act_from(arch: Architecture) -> dict[str, str]:
    """Hidden layers whose act_bits quantize nothing of their own: a layer without activation
    feeds adds only, quantized by the add's shared quantizer at its main branch's bits."""
    out = {}
    for spec in arch.layers[:-1]:
        adds = arch.consumers(spec.name) if spec.act is None else []
        if adds and arch.add_bits_source(adds[0]) != spec.name:
            out[spec.name] = arch.add_bits_source(adds[0])
    return out


def _nearest(value: float, allowed: tuple) -> int | float:
    """The allowed value closest to `value` (ties: the larger)."""
    return min(allowed, key=lambda a: (abs(a - value), -a))


class SearchSpace(BaseModel):
    """The choices per layer and unit, and the channel ranking that turns choices into a plan."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    layers: tuple[str, ...]
    # a layer without an activation quantizer of its own (the second input of a residual add)
    # -> the layer whose `.a` sets its act_bits (the add's main branch)
    act_from: dict[str, str] = {}
    units: dict[str, tuple[str, ...]]  # prunable unit (its first layer) -> its layers
    out_channels: dict[str, int]  # full width of each unit
    ranking: dict[str, list[int]]  # each unit's channels, most important first
    weight_bits: tuple[int, ...]
    act_bits: tuple[int, ...]
    keep_fractions: tuple[float, ...]
    min_keep: int
    input_bits: int

    @classmethod
    def build(cls, arch: Architecture, ranking: dict[str, list[int]], weight_bits, act_bits,
              keep_fractions, min_keep: int, input_bits: int) -> SearchSpace:
        """The space of an architecture (the classifier's channels are never pruned)."""
        units = prunable_units(arch)
        return cls(layers=tuple(arch.layer_names), act_from=_act_from(arch),
                   units={u.name: u.layers for u in units},
                   out_channels={u.name: u.channels for u in units}, ranking=ranking,
                   weight_bits=tuple(weight_bits), act_bits=tuple(act_bits),
                   keep_fractions=tuple(keep_fractions), min_keep=min_keep, input_bits=input_bits)

    @property
    def classifier(self) -> str:
        return self.layers[-1]

    def distributions(self) -> dict[str, tuple]:
        """Every parameter of the space and its allowed values."""
        out: dict[str, tuple] = {}
        for name in self.layers:
            out[f"{name}.w"] = self.weight_bits
            if name != self.classifier and name not in self.act_from:
                out[f"{name}.a"] = self.act_bits
            if name in self.units:
                out[f"{name}.keep"] = self.keep_fractions
        return out

    def size(self) -> int:
        """Number of distinct points."""
        return math.prod(len(v) for v in self.distributions().values())

    def suggest(self, trial) -> Choices:
        """Ask an Optuna trial for a point of the space."""
        return {k: trial.suggest_categorical(k, list(v)) for k, v in self.distributions().items()}

    def kept(self, unit: str, fraction: float) -> int:
        """Channels a unit keeps at `fraction`."""
        full = self.out_channels[unit]
        return min(full, max(self.min_keep, round(fraction * full)))

    def plan(self, choices: Choices) -> CompressionPlan:
        """The compression plan of a point (kept channels: each unit's best-ranked ones, the
        same in all its layers)."""
        keep: dict[str, list[int] | None] = dict.fromkeys(self.layers)
        for unit, members in self.units.items():
            n = self.kept(unit, float(choices[f"{unit}.keep"]))
            if n < self.out_channels[unit]:
                keep.update(dict.fromkeys(members, sorted(self.ranking[unit][:n])))
        layers = {
            name: {"weight_bits": int(choices[f"{name}.w"]),
                   "act_bits": None if name == self.classifier
                   else int(choices[f"{self.act_from.get(name, name)}.a"]),
                   "keep": keep[name]}
            for name in self.layers
        }
        return CompressionPlan.from_dict({"input_bits": self.input_bits, "layers": layers})

    def choices(self, plan: CompressionPlan) -> Choices:
        """The point of the space nearest to any plan (a seed): bits and the share of channels
        kept (a unit's: its first layer's) rounded to allowed values; which channels are kept
        follows the ranking, and unstructured pruning (prune_k) is dropped."""
        out: Choices = {}
        for name in self.layers:
            lp = plan.layers[name]
            out[f"{name}.w"] = _nearest(lp.weight_bits, self.weight_bits)
            if name != self.classifier and name not in self.act_from:
                out[f"{name}.a"] = _nearest(lp.act_bits or max(self.act_bits), self.act_bits)
            if name in self.units:
                share = 1.0 if lp.keep is None else len(lp.keep) / self.out_channels[name]
                out[f"{name}.keep"] = _nearest(share, self.keep_fractions)
        return out
