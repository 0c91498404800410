"""A recipe bound to its run folder: the data, the architecture and the checked artefacts of
finished steps, as every step and command reads them."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TypeVar

import torch
from pydantic import BaseModel, ValidationError

from flow.core.errors import ArtefactError, ConfigError
from flow.finn import FinnBuild
from flow.ml.data import Dataset, load_dataset
from flow.models import Architecture, Net, build_float, build_quant
from flow.recipe.config import Recipe
from flow.recipe.plan import CompressionPlan
from flow.run.folder import RunFolder, StepRecord
from flow.run.table import step_folder

R = TypeVar("R", bound=BaseModel)


@dataclass
class Run:
    """A recipe bound to its run folder; loads (and checks) what earlier steps saved."""

    recipe: Recipe
    folder: RunFolder

    @property
    def dir(self) -> Path:
        return self.folder.path

    @property
    def rtlsim_cache(self) -> Path:
        """Verilator builds shared by the runs of one output root ($DENSIFLOW_RTLSIM_CACHE wins)."""
        env = os.environ.get("DENSIFLOW_RTLSIM_CACHE")
        return Path(env) if env else self.dir.parent / "rtlsim_cache"

    @property
    def synth_cache(self) -> Path:
        """Yosys results, shared by the runs of one output root."""
        from flow.sim.synth import synth_cache

        return synth_cache(self.dir.parent)

    def step_dir(self, step: str) -> Path:
        return self.folder.step_link(step_folder(step))

    def record(self, step: str) -> StepRecord:
        record = self.folder.record(step_folder(step))
        if record is None:
            raise ArtefactError(f"{self.step_dir(step)}: step '{step}' has not finished; run "
                                "densiflow run RECIPE")
        return record

    def result(self, step: str, model: type[R]) -> R:
        """A finished step's typed result (ArtefactError naming the step if it does not read)."""
        try:
            return model.model_validate(self.record(step).result)
        except ValidationError:
            raise ArtefactError(f"{self.step_dir(step)}/result.json was written by another "
                                f"densiflow version; redo it: densiflow run RECIPE --from "
                                f"{step}") from None

    def artefact(self, step: str, rel: str) -> Path:
        return self.folder.artefact(step_folder(step), rel)

    @cached_property
    def data(self) -> Dataset:
        d = self.recipe.data
        extra = {} if d.shape is None else {"shape": tuple(d.shape)}
        return load_dataset(d.dataset, d.path, seed=d.seed, limit=d.limit, **extra)

    @cached_property
    def arch(self) -> Architecture:
        arch = self.recipe.model.architecture(tuple(self.data.in_shape))
        if tuple(arch.in_shape) != tuple(self.data.in_shape):
            raise ConfigError(
                f"model.arch: '{arch.name}' takes inputs {arch.in_shape}, but dataset "
                f"'{self.data.name}' has {self.data.in_shape}"
            )
        return arch

    def finn_build(self) -> FinnBuild:
        """The FINN build of the run, its files checked."""
        from flow.run.results import FinnResult

        build = self.result("finn", FinnResult).build.at(self.step_dir("finn"))
        for rel in build.paths.values():
            self.artefact("finn", rel)
        return build

    def load_state(self, step: str, model: Net) -> Net:
        """Load a step's model.pt into `model` (checked first)."""
        path = self.artefact(step, "model.pt")
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
        except (RuntimeError, OSError, ValueError) as err:
            raise ArtefactError(f"{path} does not fit this network ({err}); redo it: densiflow "
                                f"run RECIPE --from {step}") from None
        return model.eval()

    def float_model(self) -> Net:
        return self.load_state("baseline", build_float(self.arch, self.data.pixel_max))

    def plan(self) -> CompressionPlan:
        return CompressionPlan.load(self.artefact("plan", "plan.yaml"))

    def quant_model(self) -> Net:
        return self.load_state("qat", build_quant(self.arch, self.data.pixel_max, self.plan()))
