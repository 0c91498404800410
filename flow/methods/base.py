"""The method interface: context, output and lookup by name.

A method is `make_plan(ctx, params, out_dir) -> MethodOutput`: `params` is the recipe's typed
`method` section (flow.methods.params), `out_dir` the step folder for its artefacts (tables,
plots). A method that trains returns its network too; the qat step then fine-tunes from it
instead of from the float network.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flow.methods.params import METHODS, method_name
from flow.ml.data import Dataset
from flow.ml.train import TrainConfig
from flow.models import Architecture, Net
from flow.recipe.plan import CompressionPlan

if TYPE_CHECKING:
    from flow.recipe.config import Recipe


@dataclass(frozen=True)
class MethodContext:
    """What every method may use: the architecture, the data, the trained float network."""

    arch: Architecture
    data: Dataset
    float_model: Net
    qat: TrainConfig  # fine-tuning settings for methods that train candidates
    min_bits: int  # narrowest weights the hardware target builds (2 for FINN's RTL layers)
    seed: int = 0
    # the whole recipe, for methods that read sections besides `method` (their params' `reads`)
    recipe: Recipe | None = None
    # a folder under the run that outlives an interrupted step (a search's study), None: out_dir
    state_dir: Path | None = None


@dataclass(frozen=True)
class MethodOutput:
    """A method's plan, and the network it trained (None: QAT starts from the float network)."""

    plan: CompressionPlan
    model: Net | None = None


Method = Callable[[MethodContext, Any, Path], MethodOutput]  # its params: the method's class


def get_method(name: str) -> Method:
    """The make_plan function of a method named in the recipe (names are checked at load)."""
    params = next(p for p in METHODS if method_name(p) == name)
    module, _, function = params.implementation.partition(":")
    return getattr(importlib.import_module(module), function)
