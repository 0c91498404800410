"""Shared test helpers (importable from the test modules: tests/ is on pytest's path)."""
from __future__ import annotations

import pytest
import torch

from flow.methods.base import MethodContext
from flow.ml.data import load_dataset
from flow.ml.train import TrainConfig, train
from flow.models import build_float, get_architecture
from flow.recipe.config import parse_recipe


def method_context(limit: int, float_epochs: int, recipe: dict | None = None) -> MethodContext:
    """digits (`limit` training images), digits_cnn trained `float_epochs` epochs, 1-epoch QAT."""
    data = load_dataset("digits", seed=0, limit=limit)
    arch = get_architecture("digits_cnn")
    torch.manual_seed(0)
    net = build_float(arch, data.pixel_max)
    train(net, data.x_train, data.y_train, TrainConfig(float_epochs, lr=3e-3), "float")
    extra = {} if recipe is None else {"recipe": parse_recipe({"name": "t", **recipe})}
    return MethodContext(arch, data, net, TrainConfig(1), min_bits=2, seed=0, **extra)


TIER_PREFIX = "tier "  # conftest's run summary names the tiers skipped with this prefix


def skip_tier(tier: str, missing: str, enable: str) -> None:
    """Skip a test whose tier needs a system program that is not installed."""
    pytest.skip(f"{TIER_PREFIX}{tier}: {missing}; enable with: {enable}")


def tiny_recipe(name: str, trials: int = 5, budget: dict | None = None, **method) -> dict:
    """A search recipe on 300 digits images that runs in seconds (method fields override)."""
    m = {"name": "search", "trials": trials, "population": 4, "trial_epochs": 1, "qat_top": 2,
         "builtin_seeds": ["uniform"], "weight_bits": [2, 3, 4], "act_bits": [2, 3, 4],
         "keep_fractions": [0.5, 0.75, 1.0]} | method
    return {"name": name, "data": {"dataset": "digits", "limit": 300}, "train": {"epochs": 2},
            "qat": {"epochs": 1}, "method": m, "budget": budget or {},
            "hardware": {"board": "pynq-z1", "target_fps": 50000, "folding": "finn"},
            "simulate": {"enabled": False}}
