"""Search benchmark: wall time, trials per minute, FINN-estimate cache hit rate, and the speed-up
of the trial phase from 1 to 2 worker processes, as JSON.

The recipe's search runs from scratch with 1 and with 2 workers (fresh folders, same trials),
then once more on the 2-worker folder (a resumed, complete study: every FINN estimate it asks for
comes from the cache). `python -m flow.search.bench [RECIPE] [TRIALS]` writes
build/bench/search.json.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from flow.core.io import atomic_write_json
from flow.recipe.config import Recipe, load_recipe
from flow.search.runner import run_search, search_params

RECIPE = Path("build/digits_search.yaml")
OUT = Path("build/bench")


def _one(recipe: Recipe, folder: Path, workers: int) -> dict:
    t0 = time.perf_counter()
    o = run_search(recipe, folder, workers=workers)
    return {"workers": workers, "wall_s": round(time.perf_counter() - t0, 1),
            "search_s": round(o.total_seconds, 1), "trial_phase_s": round(o.search_seconds, 1),
            "trials": o.trials, "trials_per_minute": round(o.trials_per_minute, 2),
            "finn_requests": o.finn_cache.requests, "finn_cache_hits": o.finn_cache.hits,
            "finn_cache_hit_rate": round(o.finn_cache.hit_rate, 3), "chosen": o.chosen}


def search_bench(out_dir: Path = OUT / "search", recipe_path: Path = RECIPE,
                 trials: int = 24) -> dict:
    """Run the benchmark (see the module doc); returns JSON-able figures."""
    recipe = load_recipe(recipe_path)
    params = search_params(recipe).model_copy(update={"trials": trials, "report": False})
    recipe = recipe.model_copy(update={"method": params})
    runs = {}
    for workers in (1, 2):
        folder = out_dir / f"workers_{workers}"
        shutil.rmtree(folder, ignore_errors=True)
        runs[workers] = _one(recipe, folder, workers)
    resumed = _one(recipe, out_dir / "workers_2", 2)
    return {
        "machine": {"python": sys.version.split()[0], "cpus": os.cpu_count(),
                    "cpu": platform.processor() or platform.machine(),
                    "load_average_1min": round(os.getloadavg()[0], 2)},
        "recipe": str(recipe_path), "trials": trials,
        "one_worker": runs[1], "two_workers": runs[2], "resumed_two_workers": resumed,
        "speedup_1_to_2_workers": round(runs[1]["trial_phase_s"] / runs[2]["trial_phase_s"], 2),
        "finn_cache_hit_rate": {"fresh": runs[2]["finn_cache_hit_rate"],
                                "resumed": resumed["finn_cache_hit_rate"]},
    }


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    recipe = Path(argv[0]) if argv else RECIPE
    report = search_bench(OUT / "search", recipe, int(argv[1]) if len(argv) > 1 else 24)
    atomic_write_json(OUT / "search.json", report)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
