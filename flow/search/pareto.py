"""Pareto fronts of the candidates, the choice under the budget, and the files a person runs.

Fronts (each over the candidates FINN estimated, accuracy = validation after the short
fine-tuning):
- accuracy_vs_mbit: accuracy up, weights + activations (Mbit) down;
- accuracy_vs_lut_bram18: accuracy up, LUT + BRAM18 (FINN's estimate) down;
- pd_vs_fps: performance density up, frames/s (FINN's estimate) up.

Every kept point gets `<points>/<digest>/plan.yaml` and `recipe.yaml`: the search's recipe with
`method: {name: plan, path: plan.yaml}` and the name `<recipe>-<digest[:8]>`, so
`densiflow run <points>/<digest>/recipe.yaml` trains, builds and simulates that plan.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from flow.core.io import atomic_write_text
from flow.recipe.config import Recipe
from flow.search.evaluate import Candidate

Axis = tuple[Callable[[Candidate], float], bool]  # value, larger is better

FRONTS: dict[str, tuple[Axis, Axis]] = {
    "accuracy_vs_mbit": ((lambda c: c.val_accuracy, True), (lambda c: c.size.total_mbit, False)),
    "accuracy_vs_lut_bram18": ((lambda c: c.val_accuracy, True),
                               (lambda c: c.hardware.lut_bram18, False)),
    "pd_vs_fps": ((lambda c: c.performance_density, True), (lambda c: c.hardware.fps, True)),
}
SELECT: dict[str, Callable[[float, Candidate], float]] = {  # (accuracy, candidate) -> larger better
    "performance_density": lambda acc, c: 100 * acc / c.size.total_mbit,
    "lut_bram18": lambda acc, c: -c.hardware.lut_bram18,
    "accuracy": lambda acc, c: acc,
    "total_mbit": lambda acc, c: -c.size.total_mbit,
}


def front(cands: Sequence[Candidate], axes: tuple[Axis, Axis]) -> list[Candidate]:
    """The non-dominated candidates on two axes, along the first axis (best first)."""
    def key(c: Candidate) -> tuple[float, float]:
        return tuple(f(c) if up else -f(c) for f, up in axes)  # both larger-is-better

    pts = [(key(c), c) for c in cands]
    keep = [c for k, c in pts
            if not any(o[0] >= k[0] and o[1] >= k[1] and o != k for o, _ in pts)]
    unique = {c.digest: c for c in keep}
    return sorted(unique.values(), key=lambda c: (-key(c)[0], -key(c)[1]))


def fronts(cands: Sequence[Candidate]) -> dict[str, list[Candidate]]:
    """Every front of FRONTS."""
    return {name: front(cands, axes) for name, axes in FRONTS.items()}


def write_point(folder: Path, recipe: Recipe, cand: Candidate) -> tuple[Path, Path]:
    """plan.yaml and a recipe.yaml that runs it, in folder; returns both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    plan_path = folder / "plan.yaml"
    cand.compression_plan().save(plan_path)
    data = recipe.model_dump(mode="json")
    data["name"] = f"{recipe.name}-{cand.digest[:8]}"
    data["method"] = {"name": "plan", "path": "plan.yaml"}
    recipe_path = folder / "recipe.yaml"
    header = (f"# plan {cand.digest} found by the search '{recipe.name}': "
              f"densiflow run {recipe_path}\n")
    atomic_write_text(recipe_path, header + yaml.safe_dump(data, sort_keys=False))
    return plan_path, recipe_path
