"""The recipe: one YAML file describing a run, validated with clear errors naming the field."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flow.errors import ConfigError
from flow.finn_build import DEFAULT_FIFO_DEPTH
from flow.io import read_yaml


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(_Section):
    dataset: str = "digits"
    path: str | None = None  # folder of MNIST idx files or CIFAR-10 python batches
    seed: int = 0
    limit: int | None = Field(default=None, ge=1)  # cap on training samples, for quick runs


class ModelSection(_Section):
    arch: str = "digits_cnn"


class TrainSection(_Section):
    epochs: int = Field(default=30, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    batch_size: int = Field(default=64, ge=2)
    weight_decay: float = Field(default=0.0, ge=0)


class HardwareSection(_Section):
    board: str = "pynq-z1"
    target_fps: float = Field(default=100_000, gt=0)  # folding target, frames per second
    clock_mhz: float | None = Field(default=None, gt=0)  # None: the board's default clock
    fifo_depth: int = Field(default=DEFAULT_FIFO_DEPTH, ge=2, le=65536)  # words per FIFO


class SimulateSection(_Section):
    enabled: bool = True
    frames: int | None = Field(default=None, ge=1)  # None: the whole test split
    backpressure: float = Field(default=0.0, ge=0, lt=1)  # probability of a stalled output cycle


class Recipe(_Section):
    """A whole run: data, architecture, training, compression method, hardware target."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    data: DataSection = DataSection()
    model: ModelSection = ModelSection()
    train: TrainSection = TrainSection()
    qat: TrainSection = TrainSection(epochs=10, lr=1e-3)
    method: dict[str, Any] = {"name": "uniform", "weight_bits": 4, "act_bits": 4}
    hardware: HardwareSection = HardwareSection()
    simulate: SimulateSection = SimulateSection()


def parse_recipe(data: Any, source: str = "recipe") -> Recipe:
    """Validate plain data; a ConfigError names every offending field and what is allowed."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: " + "; ".join(_describe(e) for e in err.errors())) from None
    if "name" not in recipe.method:
        raise ConfigError(f"{source}: method.name is required (e.g. uniform, aqp)")
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe YAML file."""
    return parse_recipe(read_yaml(path, "recipe file"), source=str(path))


def _describe(error: dict) -> str:
    field = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key '{field}'"
    return f"{field}: {error['msg']} (got {error.get('input')!r})"
