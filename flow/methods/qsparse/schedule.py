"""qsparse ("Learning Low-Precision Structured Subnetworks Using Joint Layerwise Channel Pruning
and Uniform Quantization"): layerwise channel pruning (Algorithm 1) with moving-average QAT
(Algorithms 2 and 3), and the pruning schedules it is compared with.

Algorithm 1 on the trained float network, one mask m_i and importance μ_i per hidden layer i
(the classifier keeps all its outputs). m_i starts at 1 and multiplies layer i's output channels
after its ReLU; μ_i starts at 0 and is the running mean, over the training steps since the last
mask change anywhere in the network, of each channel's l1 norm of output activations
(mean over the batch of Σ_hw |a_c|), μ(t+1) = (μ(t)·t + ||a||_1)/(t+1). Every step updates all
weights by backpropagation; layer i's mask is set only at layer i's step of the schedule, keeping
the (1 - s) share of its channels with the largest importance ("Layerwise (A)"; "Layerwise (W)"
ranks by the l1 norm of each channel's weights at that step instead). The L layer steps are
spread evenly over the first `prune_fraction` of the training steps, t_i = (i+1)·P/L; the rest
heals the network. The best validation epoch after the last mask change is kept. On a graph
network the "layers" of the schedule are channel units (flow.importance.groups): the layers
feeding one residual add, and a depthwise layer with its producer, share one mask, set at the
unit's step by the sum of the members' normalised importances.

The schedules compared (all but "scratch" start from the float network, train `epochs` epochs
with the recipe's QAT optimiser settings and end at the same sparsity s in every hidden layer):
- "scratch": the pruned-size network trained from random weights with the recipe's `train`
  settings for train.epochs + epochs epochs (the training the pruned networks got in all);
- "one_shot": every layer pruned at step 0 by activation l1 on `calib_samples` train images
  (flow.importance.channel.activation_l1), then fine-tuned;
- "stepwise": Zhu & Gupta's schedule, every layer at once, n = L steps at t_k = k·P/n with
  s_k = s_f + (s_i - s_f)(1 - k/n)^3, s_i = 0, importance μ (activation l1) as above;
- "layerwise_a", "layerwise_w": Algorithm 1.

Pruned channels are then removed physically (the plan's `keep`; flow.models.transfer_weights does
the channel surgery), and the plan's layers use the moving-average quantizers
(`quantizer: moving_average`, flow.models.quantizers) at weight_bits / act_bits. The method
returns the chosen schedule's pruned float network; the qat step fine-tunes it with QAT.
With `report: true` every schedule runs at every `report_sparsities` value and
flow.methods.qsparse.report writes the paper's Table 4 with FINN's estimates.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch

from flow.core.errors import DensiflowError
from flow.importance.channel import activation_l1, weight_l1
from flow.importance.groups import Keep, prunable_units, unit_scores, with_keep
from flow.importance.pruning import keep_strongest_fraction
from flow.methods.base import MethodContext
from flow.methods.params import QsparseParams
from flow.ml.train import TrainConfig, train, train_steps
from flow.models import Net, build_float, ptq_model, transfer_weights
from flow.models.ptq import CALIB_SAMPLES
from flow.models.quantizers import running_mean
from flow.recipe.plan import CompressionPlan
from hw_models.rules import input_bits

SCHEDULES = ("scratch", "one_shot", "stepwise", "layerwise_a", "layerwise_w")
Event = tuple[int, dict[str, float]]  # (training step, {layer: sparsity to reach})


# ----------------------------------------------------------------------------- schedules


def zhu_gupta(k: int, n: int, s_f: float, s_i: float = 0.0) -> float:
    """Zhu & Gupta's cubic sparsity at pruning step k of n: s_f + (s_i - s_f)(1 - k/n)^3."""
    return s_f + (s_i - s_f) * (1.0 - k / n) ** 3


def mask_events(schedule: str, layers: list[str], steps: int, sparsity: float) -> list[Event]:
    """When each schedule sets which layers' masks: `steps` is the pruning phase P."""
    n = len(layers)
    if schedule in ("layerwise_a", "layerwise_w"):  # layer i at t_i = (i+1)·P/L, no other
        return [(round((i + 1) * steps / n), {name: sparsity}) for i, name in enumerate(layers)]
    if schedule == "stepwise":
        return [(round(k * steps / n), dict.fromkeys(layers, zhu_gupta(k, n, sparsity)))
                for k in range(1, n + 1)]
    return []  # one_shot cuts once before training (run_schedule), scratch never


# ----------------------------------------------------------------------------- Algorithm 1's state


class ChannelMasks:
    """Masks m_i and importance μ_i of the hidden layers, applied to a full-width float network
    by forward hooks on its blocks (after each ReLU). Masks are set per channel unit
    (flow.importance.groups): the layers feeding one residual add, and a depthwise layer with its
    producer, share one mask; a unit is named by its first layer (`layers`)."""

    def __init__(self, model: Net, measure: str = "act_l1", min_keep: int = 2):
        self.model, self.measure, self.min_keep = model, measure, min_keep
        self.units = {u.name: u for u in prunable_units(model.arch)}
        self.layers = list(self.units)
        names = [n for u in self.units.values() for n in u.layers]
        widths = {name: model.blocks[name][0].weight.shape[0] for name in names}
        self.m = {name: torch.ones(c) for name, c in widths.items()}
        self.mu = {name: torch.zeros(c) for name, c in widths.items()}
        self.t = dict.fromkeys(names, 0)
        self._hooks = [model.blocks[name].register_forward_hook(self._hook(name))
                       for name in names]

    def _hook(self, name: str):
        def hook(_module, _inputs, out):
            out = out * self.m[name].view(1, -1, *([1] * (out.dim() - 2)))
            if self.model.training:  # μ(t+1) = (μ(t)·t + ||a||_1) / (t+1)
                l1 = out.detach().abs().flatten(2).sum(2) if out.dim() > 2 else out.detach().abs()
                self.mu[name] = running_mean(self.mu[name], l1.mean(0), self.t[name])
                self.t[name] += 1
            return out
        return hook

    def scores(self, unit: str) -> dict[str, list[float]]:
        """Both measures of unit i now, its members' normalised scores summed: μ ("act_l1") and
        each channel's weight l1 norm."""
        u, w = self.units[unit], weight_l1(self.model)
        return {"act_l1": unit_scores(u, {n: self.mu[n].tolist() for n in u.layers}).tolist(),
                "weight_l1": unit_scores(u, w).tolist()}

    def set_mask(self, unit: str, sparsity: float, scores: list[float]) -> None:
        """m_i of every layer of unit i: keep the (1 - s) channels with the largest scores; every
        μ restarts at 0."""
        mask = torch.zeros(self.units[unit].channels)
        mask[list(keep_strongest_fraction(scores, sparsity, self.min_keep))] = 1.0
        for name in self.units[unit].layers:
            self.m[name] = mask
        for layer in self.mu:
            self.mu[layer], self.t[layer] = torch.zeros_like(self.mu[layer]), 0

    def keep(self) -> dict[str, tuple[int, ...]]:
        """Kept channel indices of every prunable layer."""
        return {name: tuple(int(c) for c in torch.nonzero(m).flatten())
                for name, m in self.m.items()}

    def remove(self) -> None:
        """Take the hooks off the network."""
        for h in self._hooks:
            h.remove()


# ----------------------------------------------------------------------------- training


@dataclass
class ScheduleResult:
    """One schedule at one sparsity: the plan, the pruned float network, what happened."""

    schedule: str
    sparsity: float
    plan: CompressionPlan
    model: Net  # float network at the plan's channels
    seconds: float
    # per mask change: step, layer (the unit's name), unit (its layers, `a = b`), A/W scores
    events: list[dict] = field(default_factory=list)


def _step_events(masks: ChannelMasks, events: list[Event], step: int, log_rows: list[dict]) -> None:
    """Set the masks of the events at `step`; every layer's scores are taken before any is set."""
    for at, layers in events:
        if at != step:
            continue
        rows = [{"step": step, "layer": name, "unit": masks.units[name].label, "sparsity": s,
                 **masks.scores(name)}
                for name, s in layers.items()]
        for row in rows:
            masks.set_mask(row["layer"], row["sparsity"], row[masks.measure])
        log_rows.extend(rows)


def train_with_masks(model: Net, masks: ChannelMasks, events: list[Event], data, cfg: TrainConfig,
                     label: str) -> list[dict]:
    """Algorithm 1's loop: flow.ml.train's training with the masks set at their events; keeps the
    best validation epoch after the last event. Returns the event log."""
    last = max((at for at, _ in events), default=0)
    if last >= train_steps(len(data.x_train), cfg):
        raise DensiflowError(f"method.prune_fraction: the {label} schedule sets its last mask at "
                             f"step {last}, after training ends; lower prune_fraction")
    rows: list[dict] = []
    train(model, data.x_train, data.y_train, cfg, label, data.x_val, data.y_val,
          before_step=lambda step: _step_events(masks, events, step, rows), best_after_step=last)
    return rows


def _plan(ctx: MethodContext, p: QsparseParams, keep: dict[str, Keep]) -> CompressionPlan:
    return with_keep(ctx.arch.uniform_plan(p.weight_bits, p.act_bits,
                                           input_bits(ctx.data.input_bits),
                                           quantizer="moving_average"), keep)


def _float_train_cfg(ctx: MethodContext, extra_epochs: int) -> TrainConfig:
    if ctx.recipe is None:
        raise DensiflowError("method qsparse: the 'scratch' schedule needs the recipe's train "
                             "section in its context")
    t = ctx.recipe.train
    return TrainConfig(t.epochs + extra_epochs, t.lr, t.batch_size, t.weight_decay, ctx.seed)


def run_schedule(ctx: MethodContext, p: QsparseParams, schedule: str,
                 sparsity: float) -> ScheduleResult:
    """Prune the float network with one schedule; the pruned channels removed physically."""
    t0 = time.perf_counter()
    units = prunable_units(ctx.arch)
    label = f"{schedule} {round(sparsity * 100)}%"
    if schedule == "scratch":  # the pruned sizes; which channels does not matter
        plan = _plan(ctx, p, {n: tuple(range(len(keep_strongest_fraction(
            [0.0] * u.channels, sparsity, p.min_keep)))) for u in units for n in u.layers})
        torch.manual_seed(ctx.seed)
        model = build_float(ctx.arch, ctx.data.pixel_max, plan)
        train(model, ctx.data.x_train, ctx.data.y_train, _float_train_cfg(ctx, p.epochs), label,
              ctx.data.x_val, ctx.data.y_val)
        return ScheduleResult(schedule, sparsity, plan, model, time.perf_counter() - t0)
    full = copy.deepcopy(ctx.float_model)
    masks = ChannelMasks(full, "weight_l1" if schedule == "layerwise_w" else "act_l1", p.min_keep)
    cfg = TrainConfig(p.epochs, ctx.qat.lr, ctx.qat.batch_size, ctx.qat.weight_decay, ctx.seed)
    steps = round(p.prune_fraction * p.epochs * -(-len(ctx.data.x_train) // cfg.batch_size))
    events = mask_events(schedule, masks.layers, steps, sparsity)
    if schedule == "one_shot":  # importance of the converged float network, then one cut
        calib_x, _ = ctx.data.subset("train", p.calib_samples, ctx.seed)
        scores = activation_l1(ctx.float_model, calib_x)
        for u in units:
            masks.set_mask(u.name, sparsity, unit_scores(u, scores).tolist())
    rows = train_with_masks(full, masks, events, ctx.data, cfg, label)
    masks.remove()
    plan = _plan(ctx, p, masks.keep())
    model = transfer_weights(full, None, build_float(ctx.arch, ctx.data.pixel_max, plan), plan)
    return ScheduleResult(schedule, sparsity, plan, model.eval(), time.perf_counter() - t0, rows)


def quant_start(ctx: MethodContext, result: ScheduleResult) -> Net:
    """The plan's Brevitas network holding the pruned float weights, calibrated (the qat step's
    start; a calibrated network's state loads into a fresh one)."""
    calib_x, _ = ctx.data.subset("train", CALIB_SAMPLES, ctx.seed)
    return ptq_model(ctx.arch, result.model, result.plan, calib_x, start_plan=result.plan)
