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

from flow.data import Dataset
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
    min_bits: int  # narrowest weights the hardware target builds (2 for FINN's RTL layers)
    seed: int = 0


@dataclass(frozen=True)
class MethodOutput:
    """A method's plan, and the network it trained (None: QAT starts from the float network)."""

    plan: CompressionPlan
    model: Net | None = None


Method = Callable[[MethodContext, object, Path], MethodOutput]
MODULES = {"uniform": "uniform", "aqp": "aqp", "plan": "plan_file"}  # method name -> module of flow.methods


def get_method(name: str) -> Method:
    """The make_plan function of a method named in the recipe (names are checked at load)."""
    return importlib.import_module(f"flow.methods.{MODULES[name]}").make_plan
