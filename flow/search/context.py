"""The search's state folder: what every worker process rebuilds its SearchContext from.

`context.json` holds the recipe, the search parameters, the search space (with the channel
ranking) and the float network's validation accuracy; `float_model.pt` the float weights. Data and
architecture are rebuilt from the recipe, as a run does.
"""
from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict

from flow.core.io import atomic_write_text
from flow.methods.params import SearchParams
from flow.ml.data import Dataset
from flow.ml.train import accuracy
from flow.models import Architecture, Net, build_float
from flow.models.ptq import CALIB_SAMPLES
from flow.recipe.config import Recipe, parse_recipe
from flow.search.evaluate import SearchContext
from flow.search.space import SearchSpace, channel_ranking
from hw_models.rules import input_bits

CONTEXT_FILE = "context.json"
FLOAT_FILE = "float_model.pt"


class SearchState(BaseModel):
    """The serialisable part of a SearchContext."""

    model_config = ConfigDict(extra="forbid")

    recipe: dict
    params: dict
    space: SearchSpace
    float_val_accuracy: float
    synth_cache: str | None = None  # Yosys' per-node cache shared with the runs (None: the state's)


def prepare_context(recipe: Recipe, params: SearchParams, arch: Architecture, data: Dataset,
                    float_model: Net, state_dir: Path,
                    synth_cache: Path | None = None) -> SearchContext:
    """Rank channels, build the space and save the state the workers load."""
    state_dir.mkdir(parents=True, exist_ok=True)
    calib_x, _ = data.subset("train", CALIB_SAMPLES, recipe.data.seed)
    space = SearchSpace.build(arch, channel_ranking(float_model, calib_x), params.weight_bits,
                              params.act_bits, params.keep_fractions, params.min_keep,
                              input_bits(data.input_bits))
    state = SearchState(recipe=recipe.model_dump(mode="json"),
                        params=params.model_dump(mode="json"), space=space,
                        float_val_accuracy=accuracy(float_model, data.x_val, data.y_val),
                        synth_cache=str(synth_cache) if synth_cache else None)
    torch.save(float_model.state_dict(), state_dir / FLOAT_FILE)
    atomic_write_text(state_dir / CONTEXT_FILE, state.model_dump_json(indent=1))
    return _context(recipe, params, arch, data, float_model, state, state_dir)


def load_context(state_dir: Path) -> SearchContext:
    """The SearchContext saved in state_dir (in a worker process)."""
    from flow.run.folder import RunFolder
    from flow.run.run import Run

    state = SearchState.model_validate_json((state_dir / CONTEXT_FILE).read_text())
    recipe = parse_recipe(state.recipe, source=str(state_dir / CONTEXT_FILE))
    params = SearchParams.model_validate(state.params)
    run = Run(recipe, RunFolder(state_dir))
    model = build_float(run.arch, run.data.pixel_max)
    model.load_state_dict(torch.load(state_dir / FLOAT_FILE, weights_only=True))
    return _context(recipe, params, run.arch, run.data, model.eval(), state, state_dir)


def _context(recipe: Recipe, params: SearchParams, arch: Architecture, data: Dataset,
             float_model: Net, state: SearchState, state_dir: Path) -> SearchContext:
    return SearchContext(recipe=recipe, params=params, arch=arch, data=data,
                         float_model=float_model, float_val_accuracy=state.float_val_accuracy,
                         space=state.space, finn_cache=state_dir / "finn_cache",
                         synth_cache=Path(state.synth_cache) if state.synth_cache else None)
