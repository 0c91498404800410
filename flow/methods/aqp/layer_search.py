"""AQP: adaptive quantization and pruning guided by layer importance (Shinde), as a method.

Search (`search`): layers are visited from the least to the most important (combined layer
importance, flow.importance.layer), except the `fixed_layers` (default "ends": the first layer and
the classifier stay at max_bits, unpruned; see below). For each layer in turn, starting from the
state the earlier layers left:
1. bits ("quant", "combined"): its weight bit-width steps down max_bits-1, ..., ctx.min_bits; with
   `act_bits: follow` (default) its output activation follows the weights, floored at
   `min_act_bits` (default 2: FINN's RTL thresholding layers need >= 2 activation bits); an
   integer act_bits fixes every hidden layer's activations instead. b̄ counts weights only, so
   activation bits are chosen for accuracy and hardware, not for the metric;
2. pruning ("prune", "combined"), at the bits step 1 chose: k(l) rises k_step, 2·k_step, ...,
   k_max; "unstructured" zeroes |w| <= k·σ(l) (the paper), "structured" removes the channels
   whose activation-l1 score is below min(scores) + k·σ(scores) (flow.importance.pruning),
   physically, through transfer_weights; the classifier keeps all its outputs. On a graph
   network structured pruning acts on channel units (flow.importance.groups): the layers feeding
   one residual add, and a depthwise layer with its producer, keep one channel set, scored by
   their summed normalised activation l1; a unit is pruned at the visit of its least important
   member (the first in AQP's order), never if it holds a fixed layer.
   `order: prune_first` swaps 1 and 2.
Each step is a trial: the candidate plan's network is built from the float weights, calibrated
(post-training, `calib_samples` train images), optionally fine-tuned for `trial_epochs` on
`trial_samples` train images, and its validation cross-entropy is measured. The degradation of a
step is delta = val_loss(candidate) - val_loss(state before this layer was touched); the step is
accepted iff delta <= T_margin(l) = t_margin · Importance(l) (the paper's rule; the importance
shares are renormalised over the searched layers, so they sum to 1 without fixed layers too),
and the phase stops at its first rejected step. Because every layer's delta is measured from the
state the previous layers left, the increases telescope: the final search-time val loss exceeds
the starting (all max_bits) loss by at most t_margin. The measure is the validation loss, not
accuracy: it is continuous (269 digits val images give accuracy steps of 0.37 points) and sees a
loss of confidence before it becomes an error. Default t_margin 0.03 nats (digits float val loss
~0.04-0.05; 0.02 gives b̄ ~2.3, 0.05 b̄ ~1.7 on digits_cnn).

fixed_layers "ends": the first layer and the classifier hold 1.7 % of digits_cnn's weights, so
compressing them barely moves b̄, but post-training trials misjudge them (a 2-bit classifier
passed its PTQ trial on digits and then cost ~0.7 points after QAT, mean of 4 seeds); keeping
them at 8 bits is the usual mixed-precision practice. `fixed_layers: none` is the paper's
all-layer search.

Every trial (layer, phase, bits, k, kept channels, loss, delta, margin, accepted) is logged to
`aqp_search.json`; `importance.json` and `channel_importance.json` hold the estimates, `plan.yaml`
the chosen plan. With `report: true` (default) all three modes are searched, and the fixed
baselines, the table and the figures are produced (flow.methods.aqp.report).

The returned plan carries prune_k (unstructured) or keep (structured); `flow.models.ptq_model`
applies both to a network built from the float weights (flow.models.prune holds the masks).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from flow.importance.groups import (
    ChannelUnit,
    channel_units,
    unit_of,
    unit_scores,
    with_unit_keep,
)
from flow.importance.layer import LayerImportance
from flow.importance.pruning import structured_keep
from flow.methods.base import MethodContext
from flow.methods.params import AqpParams
from flow.ml.train import TrainConfig, mean_loss, train
from flow.models import ptq_model
from flow.recipe.plan import CompressionPlan
from hw_models import rules

log = logging.getLogger(__name__)

MODES = ("quant", "prune", "combined")
__all__ = ["search"]


@dataclass
class LayerSearchResult:
    """The chosen plan, every trial, and the losses at the start and the end."""

    plan: CompressionPlan
    trials: list[dict] = field(default_factory=list)
    start_loss: float = 0.0
    final_loss: float = 0.0
    seconds: float = 0.0



def result_dict(r: LayerSearchResult) -> dict:
    return {"plan": r.plan.to_dict(), "start_val_loss": r.start_loss,
            "final_val_loss": r.final_loss, "seconds": round(r.seconds, 2), "trials": r.trials}


def _act_bits(p: AqpParams, min_bits: int, weight_bits: int) -> int:
    floor = max(p.min_act_bits, min_bits)
    return max(weight_bits, floor) if p.act_bits == "follow" else max(p.act_bits, floor)


def layer_steps(p: AqpParams, min_bits: int, prunes: bool = True) -> list[tuple[str, dict]]:
    """One layer's trial steps in order: bit-widths down, then k(l) up (or the other way);
    `prunes` False: no pruning steps (a structured search whose unit is not this layer's turn)."""
    bit_steps, prune_steps = [], []
    if p.mode in ("quant", "combined"):
        bit_steps = [("bits", {"weight_bits": b}) for b in range(p.max_bits - 1, min_bits - 1, -1)]
    if p.mode in ("prune", "combined") and prunes:
        prune_steps = [("prune", {"k": round((i + 1) * p.k_step, 6)})
                       for i in range(round(p.k_max / p.k_step))]
    return bit_steps + prune_steps if p.order == "bits_first" else prune_steps + bit_steps


def candidate_plan(plan: CompressionPlan, p: AqpParams, name: str, phase: str, step: dict,
                   classifier: str, min_bits: int, units: list[ChannelUnit],
                   channel_scores: dict[str, list[float]]) -> CompressionPlan:
    """The plan with one step applied to layer `name` (structured: to every layer of its unit,
    thresholding the unit's summed normalised scores, flow.importance.groups)."""
    if phase == "bits":
        b = step["weight_bits"]
        act = None if name == classifier else _act_bits(p, min_bits, b)
        return plan.with_layer(name, weight_bits=b, act_bits=act)
    if p.pruning == "unstructured":
        return plan.with_layer(name, prune_k=float(step["k"]))  # Z_T(l) = k(l)·σ(l)
    unit = unit_of(units, name)
    keep = structured_keep(unit_scores(unit, channel_scores), step["k"], p.min_keep)
    return with_unit_keep(plan, unit, None if len(keep) == unit.channels else keep)


def _prunes(p: AqpParams, units: list[ChannelUnit], name: str, frozen: list[str],
            done: set[str]) -> bool:
    """Whether layer `name`'s visit has pruning steps: always for unstructured masks; structured,
    only at the first visit of its unit (the least important member), never for a unit that is
    fixed (classifier, input-fed depthwise) or holds a fixed layer. Marks the unit done."""
    if p.pruning == "unstructured":
        return True
    unit = unit_of(units, name)
    if unit.fixed or unit.name in done or any(n in frozen for n in unit.layers):
        return False
    done.add(unit.name)
    return True


def search(ctx: MethodContext, importance: LayerImportance,
           channel_scores: dict[str, list[float]], p: AqpParams) -> LayerSearchResult:
    """The sequential per-layer search of one mode (see the module doc)."""
    t0 = time.perf_counter()
    arch, classifier = ctx.arch, ctx.arch.layer_names[-1]
    calib_x, _ = ctx.data.subset("train", p.calib_samples, ctx.seed)
    trial_x, trial_y = ctx.data.subset("train", p.trial_samples, ctx.seed + 1)
    plan = arch.uniform_plan(p.max_bits, _act_bits(p, ctx.min_bits, p.max_bits),
                             rules.input_bits(ctx.data.input_bits))

    def evaluate(candidate: CompressionPlan) -> float:
        model = ptq_model(arch, ctx.float_model, candidate, calib_x)
        if p.trial_epochs:
            cfg = TrainConfig(p.trial_epochs, ctx.qat.lr, ctx.qat.batch_size, seed=ctx.qat.seed)
            train(model, trial_x, trial_y, cfg, "trial")
        return mean_loss(model, ctx.data.x_val, ctx.data.y_val)

    start = current = evaluate(plan)
    trials: list[dict] = []
    frozen = p.fixed(arch.layer_names)
    searched = sum(importance.score(n) for n in arch.layer_names if n not in frozen)
    units, pruned_units = channel_units(arch), set()
    for name in (n for n in importance.order() if n not in frozen):
        # T_margin(l) = t_margin · Importance(l), shares renormalised over the searched layers
        margin = p.t_margin * importance.score(name) / searched if searched > 0 else 0.0
        ref, layer_k, stopped = current, 0.0, set()
        for phase, step in layer_steps(p, ctx.min_bits, _prunes(p, units, name, frozen,
                                                                pruned_units)):
            if phase in stopped:
                continue
            candidate = candidate_plan(plan, p, name, phase, step, classifier, ctx.min_bits,
                                       units, channel_scores)
            loss = evaluate(candidate)
            accepted = bool(loss - ref <= margin)
            clp = candidate.layers[name]
            trials.append({
                "trial": len(trials), "layer": name, "importance": importance.score(name),
                "phase": phase, "weight_bits": clp.weight_bits, "act_bits": clp.act_bits,
                "k": step.get("k", layer_k),
                "kept_channels": len(clp.keep) if clp.keep is not None else None,
                "val_loss": loss, "ref_loss": ref, "delta": loss - ref, "margin": margin,
                "accepted": accepted,
            })
            if accepted:
                plan, current, layer_k = candidate, loss, step.get("k", layer_k)
            else:
                stopped.add(phase)
        log.debug("aqp %s: %s -> %s", p.mode, name, plan.layers[name])
    return LayerSearchResult(plan, trials, start, current, time.perf_counter() - t0)
