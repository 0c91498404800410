"""Importance of a finished run, as `densiflow importance RUN [--compare A B]` shows it.

Layer measures come from the run's AQP step (02_plan/importance.json) or are computed from the
run's float network; channel measures are `act_l1` (activation l1 over the training calibration
images), `act_l1_val` (the same over the validation split: a second calibration batch) and
`weight_l1`.
"""
from __future__ import annotations

import json
from pathlib import Path

from flow.core.errors import ConfigError
from flow.core.io import atomic_write_json
from flow.importance.channel import activation_l1, weight_l1
from flow.importance.layer import LayerImportance, layer_importance
from flow.importance.weights import MEASURES

CHANNEL_MEASURES = ("act_l1", "act_l1_val", "weight_l1")
CALIB_SAMPLES = 256


def run_importance(run) -> tuple[LayerImportance, dict[str, dict[str, list[float]]]]:
    """Layer importance and channel scores of a run (a flow.pipeline.Run), computed once."""
    saved_layer = run.step_dir("plan") / "importance.json"
    cache = run.dir / "importance"
    if not saved_layer.is_file():
        saved_layer = cache / "importance.json"
    float_model = None
    if saved_layer.is_file():
        layer = LayerImportance.from_dict(json.loads(saved_layer.read_text()))
    else:
        float_model = run.float_model()
        layer = layer_importance(run.arch, float_model, run.data, seed=run.recipe.data.seed)
        layer.save(saved_layer)
    channels_path = cache / "channel_importance.json"
    if channels_path.is_file():
        channels = json.loads(channels_path.read_text())
    else:
        float_model = float_model or run.float_model()
        d, seed = run.data, run.recipe.data.seed
        channels = {
            "act_l1": activation_l1(float_model, d.subset("train", CALIB_SAMPLES, seed)[0]),
            "act_l1_val": activation_l1(float_model, d.subset("val", CALIB_SAMPLES, seed)[0]),
            "weight_l1": weight_l1(float_model),
        }
        atomic_write_json(channels_path, channels)
    return layer, channels


def measure_scores(layer: LayerImportance, channels: dict, name: str) -> dict:
    """{layer: score} for a layer measure or 'combined', {layer: [scores]} for a channel measure."""
    if name == "combined":
        return dict(zip(layer.layers, layer.combined))
    if name in layer.normalised:
        return dict(zip(layer.layers, layer.normalised[name]))
    if name in channels:
        return channels[name]
    allowed = ["combined", *layer.normalised, *CHANNEL_MEASURES]
    hint = f" ('{name}' was not computed for this run)" if name in MEASURES else ""
    raise ConfigError(f"--compare: unknown measure '{name}'{hint}; allowed: {allowed}")


def same_kind(a: dict, b: dict, names: tuple[str, str]) -> None:
    """Layer and channel measures cannot be compared with each other."""
    if isinstance(next(iter(a.values())), list) != isinstance(next(iter(b.values())), list):
        raise ConfigError(f"--compare {names[0]} {names[1]}: one is a layer measure, the other a "
                          f"channel measure; compare two of the same kind")


def save_comparison(run_dir: Path, names: tuple[str, str], result: dict) -> Path:
    path = run_dir / "importance" / f"compare_{names[0]}_vs_{names[1]}.json"
    atomic_write_json(path, {"a": names[0], "b": names[1], **result})
    return path
