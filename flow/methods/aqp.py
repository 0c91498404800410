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
   physically, through transfer_weights; the classifier keeps all its outputs.
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
baselines, the table and the figures are produced (flow.aqp_report).

The returned plan carries prune_k (unstructured) or keep (structured); `flow.models.ptq_model`
applies both to a network built from the float weights (flow.models.prune holds the masks).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from flow.errors import ConfigError
from flow.importance.channel import activation_l1, weight_l1
from flow.importance.layer import LayerImportance, check_weights, layer_importance
from flow.models import ptq_model
from flow.importance.pruning import structured_keep
from flow.io import atomic_write_json
from flow.methods import MethodContext
from flow.plan import MAX_BITS, CompressionPlan
from flow.train import TrainConfig, mean_loss, train

log = logging.getLogger(__name__)

MODES = ("quant", "prune", "combined")
PRUNING = ("unstructured", "structured")
DEFAULTS: dict = {
    "mode": "combined",
    "pruning": "unstructured",
    "t_margin": 0.03,  # total val cross-entropy increase (nats) the search may spend
    "max_bits": 8,
    "k_max": 3.0,
    "k_step": 0.25,
    "act_bits": "follow",  # or an integer for every hidden layer
    "min_act_bits": 2,
    "fixed_layers": "ends",  # "ends" (first + classifier), "none", or a list of layer names
    "order": "bits_first",  # within a layer (combined mode): "bits_first" or "prune_first"
    "importance": None,  # measure -> weight, summing to 1; None = equal
    "calib_samples": 256,
    "trial_epochs": 0,
    "trial_samples": 256,
    "min_keep": 2,
    "report": True,
    "baseline_bits": [2, 3, 4, 8],
    "baseline_prune": [0.25, 0.5, 0.75],
    "baseline_prune_bits": 8,
}
PARAMS = set(DEFAULTS)

__all__ = ["make_plan", "search"]


@dataclass
class SearchResult:
    """The chosen plan, every trial, and the losses at the start and the end."""

    plan: CompressionPlan
    trials: list[dict] = field(default_factory=list)
    start_loss: float = 0.0
    final_loss: float = 0.0
    seconds: float = 0.0


def check_params(params: dict, min_bits: int) -> dict:
    """Defaults filled in and every value range-checked; ConfigError names the key."""
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise ConfigError(f"method: unknown keys {unknown} for 'aqp'; allowed: {sorted(PARAMS)}")
    p = {**DEFAULTS, **params}
    if p["mode"] not in MODES:
        raise ConfigError(f"method.mode: {p['mode']!r}; allowed: {list(MODES)}")
    if p["order"] not in ("bits_first", "prune_first"):
        raise ConfigError(f"method.order: {p['order']!r}; allowed: ['bits_first', 'prune_first']")
    if p["pruning"] not in PRUNING:
        raise ConfigError(f"method.pruning: {p['pruning']!r}; allowed: {list(PRUNING)}")
    for key in ("t_margin", "k_max", "k_step"):
        v = p[key]
        bad = isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0
        if bad or (key == "k_step" and v == 0):
            raise ConfigError(f"method.{key}: {v!r}; allowed: a number >= 0 (k_step > 0)")
    for key, lo, hi in (("max_bits", min_bits, MAX_BITS), ("min_act_bits", 1, MAX_BITS),
                        ("baseline_prune_bits", min_bits, MAX_BITS)):
        if not _is_int(p[key]) or not lo <= p[key] <= hi:
            raise ConfigError(f"method.{key}: {p[key]!r}; allowed: an integer {lo}..{hi}")
    act = p["act_bits"]
    if act != "follow" and not (_is_int(act) and 1 <= act <= MAX_BITS):
        raise ConfigError(f"method.act_bits: {act!r}; allowed: 'follow' or an integer 1..8")
    for key in ("calib_samples", "trial_samples", "min_keep"):
        if not _is_int(p[key]) or p[key] < 1:
            raise ConfigError(f"method.{key}: {p[key]!r}; allowed: an integer >= 1")
    if not _is_int(p["trial_epochs"]) or p["trial_epochs"] < 0:
        raise ConfigError(f"method.trial_epochs: {p['trial_epochs']!r}; allowed: an integer >= 0")
    if not isinstance(p["report"], bool):
        raise ConfigError(f"method.report: {p['report']!r}; allowed: true or false")
    if not isinstance(p["baseline_bits"], list) or not all(
        _is_int(b) and min_bits <= b <= MAX_BITS for b in p["baseline_bits"]
    ):
        raise ConfigError(f"method.baseline_bits: {p['baseline_bits']!r}; "
                          f"allowed: a list of integers {min_bits}..8")
    if not isinstance(p["baseline_prune"], list) or not all(
        isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f < 1
        for f in p["baseline_prune"]
    ):
        raise ConfigError(f"method.baseline_prune: {p['baseline_prune']!r}; "
                          "allowed: a list of fractions in (0, 1)")
    p["importance"] = check_weights(p["importance"])
    return p


def fixed_layers(p: dict, layer_names: list[str]) -> list[str]:
    """Layers the search leaves at max_bits and unpruned; ConfigError for unknown names."""
    value = p["fixed_layers"]
    if value == "ends":
        return [layer_names[0], layer_names[-1]]
    if value == "none":
        return []
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise ConfigError(f"method.fixed_layers: {value!r}; "
                          "allowed: 'ends', 'none' or a list of layer names")
    unknown = sorted(set(value) - set(layer_names))
    if unknown:
        raise ConfigError(f"method.fixed_layers: unknown layers {unknown}; "
                          f"the layers are {layer_names}")
    return list(value)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def make_plan(ctx: MethodContext, params: dict, out_dir: Path) -> CompressionPlan:
    """Importance, the AQP search for `mode`, and (report: true) baselines, table and figures."""
    p = check_params(params, ctx.min_bits)
    fixed_layers(p, ctx.arch.layer_names)  # names checked before any work
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    importance = layer_importance(
        ctx.arch, ctx.float_model, ctx.data, weights=p["importance"], high_bits=p["max_bits"],
        low_bits=ctx.min_bits, min_act_bits=max(p["min_act_bits"], ctx.min_bits), seed=ctx.seed,
    )
    importance.save(out_dir / "importance.json")
    calib_x = calibration_images(ctx, p["calib_samples"])
    channel_scores = {"act_l1": activation_l1(ctx.float_model, calib_x),
                      "weight_l1": weight_l1(ctx.float_model)}
    atomic_write_json(out_dir / "channel_importance.json", channel_scores)
    log.info("importance in %.1f s; order %s", time.perf_counter() - t0, importance.order())

    modes = list(MODES) if p["report"] else [p["mode"]]
    results = {m: search(ctx, importance, channel_scores["act_l1"], {**p, "mode": m})
               for m in modes}
    chosen = results[p["mode"]]
    atomic_write_json(out_dir / "aqp_search.json", {
        "params": p,
        "chosen_mode": p["mode"],
        "searches": {m: _result_dict(r) for m, r in results.items()},
    })
    chosen.plan.save(out_dir / "plan.yaml")
    if p["report"]:
        from flow.aqp_report import run_report

        run_report(ctx, p, {m: r.plan for m, r in results.items()}, channel_scores["act_l1"],
                   importance, out_dir)
    return chosen.plan


def _result_dict(r: SearchResult) -> dict:
    return {"plan": r.plan.to_dict(), "start_val_loss": r.start_loss,
            "final_val_loss": r.final_loss, "seconds": round(r.seconds, 2), "trials": r.trials}


def calibration_images(ctx: MethodContext, n: int) -> torch.Tensor:
    """The first n train images of a seeded permutation (the same as importance estimation)."""
    gen = torch.Generator().manual_seed(ctx.seed)
    return ctx.data.x_train[torch.randperm(len(ctx.data.x_train), generator=gen)[:n]]


def _act_bits(p: dict, min_bits: int, weight_bits: int) -> int:
    floor = max(p["min_act_bits"], min_bits)
    return max(weight_bits, floor) if p["act_bits"] == "follow" else max(p["act_bits"], floor)


def search(ctx: MethodContext, importance: LayerImportance,
           channel_scores: dict[str, list[float]], p: dict) -> SearchResult:
    """The sequential per-layer search of one mode (see the module doc); p = check_params(...)."""
    t0 = time.perf_counter()
    arch = ctx.arch
    classifier = arch.layer_names[-1]
    calib_x = calibration_images(ctx, p["calib_samples"])
    trial_x, trial_y = _trial_subset(ctx, p["trial_samples"])
    input_bits = min(ctx.data.input_bits, MAX_BITS)
    plan = arch.uniform_plan(p["max_bits"], _act_bits(p, ctx.min_bits, p["max_bits"]), input_bits)

    def evaluate(candidate: CompressionPlan) -> float:
        model = ptq_model(arch, ctx.float_model, candidate, calib_x)
        if p["trial_epochs"]:
            cfg = TrainConfig(p["trial_epochs"], ctx.qat.lr, ctx.qat.batch_size, seed=ctx.qat.seed)
            train(model, trial_x, trial_y, cfg, "trial")
        return mean_loss(model, ctx.data.x_val, ctx.data.y_val)

    start = current = evaluate(plan)
    trials: list[dict] = []
    do_bits = p["mode"] in ("quant", "combined")
    do_prune = p["mode"] in ("prune", "combined")
    frozen = fixed_layers(p, arch.layer_names)
    searched = sum(importance.score(n) for n in arch.layer_names if n not in frozen)
    for name in importance.order():
        if name in frozen:
            continue
        margin = p["t_margin"] * importance.score(name) / searched if searched > 0 else 0.0
        ref = current
        layer_k = 0.0
        bit_steps: list[tuple[str, dict]] = []
        prune_steps: list[tuple[str, dict]] = []
        if do_bits:
            bit_steps = [("bits", {"weight_bits": b})
                         for b in range(p["max_bits"] - 1, ctx.min_bits - 1, -1)]
        if do_prune and not (p["pruning"] == "structured" and name == classifier):
            n_k = round(p["k_max"] / p["k_step"])
            prune_steps = [("prune", {"k": round((i + 1) * p["k_step"], 6)})
                           for i in range(n_k)]
        steps = bit_steps + prune_steps if p["order"] == "bits_first" else prune_steps + bit_steps
        stopped: set[str] = set()
        for phase, step in steps:
            if phase in stopped:
                continue
            if phase == "bits":
                b = step["weight_bits"]
                act = None if name == classifier else _act_bits(p, ctx.min_bits, b)
                candidate = plan.with_layer(name, weight_bits=b, act_bits=act)
            elif p["pruning"] == "unstructured":
                candidate = plan.with_layer(name, prune_k=float(step["k"]))
            else:
                keep = structured_keep(channel_scores[name], step["k"], p["min_keep"])
                candidate = plan.with_layer(name, keep=keep)
            loss = evaluate(candidate)
            delta = loss - ref
            accepted = bool(delta <= margin)
            clp = candidate.layers[name]
            trials.append({
                "trial": len(trials), "layer": name, "importance": importance.score(name),
                "phase": phase, "weight_bits": clp.weight_bits, "act_bits": clp.act_bits,
                "k": step.get("k", layer_k),
                "kept_channels": len(clp.keep) if clp.keep is not None else None,
                "val_loss": loss, "ref_loss": ref, "delta": delta, "margin": margin,
                "accepted": accepted,
            })
            if accepted:
                plan, current = candidate, loss
                layer_k = step.get("k", layer_k)
            else:
                stopped.add(phase)
        log.debug("aqp %s: %s -> %s", p["mode"], name, plan.layers[name])
    return SearchResult(plan, trials, start, current, time.perf_counter() - t0)


def _trial_subset(ctx: MethodContext, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(ctx.seed + 1)
    idx = torch.randperm(len(ctx.data.x_train), generator=gen)[:n]
    return ctx.data.x_train[idx], ctx.data.y_train[idx]
