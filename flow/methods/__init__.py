"""Compression methods: each turns a trained float network into a CompressionPlan.

A method is `make_plan(ctx, params, out_dir) -> CompressionPlan`: `params` is the recipe's
`method` section (minus `name`), `out_dir` is the step folder for its artefacts (tables, plots).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flow.data import Dataset
from flow.errors import ConfigError
from flow.models import Architecture, Net
from flow.plan import CompressionPlan
from flow.train import TrainConfig


@dataclass(frozen=True)
class MethodContext:
    """What every method may use: the architecture, the data, the trained float network."""

    arch: Architecture
    data: Dataset
    float_model: Net
    qat: TrainConfig  # fine-tuning settings for methods that train candidates
    min_bits: int  # 2 when the deployment target is FINN's RTL layers, else 1
    seed: int = 0


Method = Callable[[MethodContext, dict, Path], CompressionPlan]


def get_method(name: str) -> Method:
    """Look up a method by name; the error lists the known ones."""
    if name not in METHODS:
        raise ConfigError(f"method.name: unknown method '{name}'; allowed: {sorted(METHODS)}")
    return importlib.import_module(f"flow.methods.{METHODS[name]}").make_plan


METHODS = {"uniform": "uniform", "aqp": "aqp"}  # recipe name -> module of flow.methods
