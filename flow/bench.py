"""`make bench`: the default recipe's wall time per step and the RTL simulator's speed, as JSON.

Runs (or resumes) build/digits.yaml, then benchmarks the Verilator simulation of its FINN
dataflow: a cold build (fresh cache, Verilator's run-time library included), a cached rebuild,
simulated cycles and frames per second, and measured vs estimated cycles per frame, without and
with 30 % output backpressure. Writes build/bench/bench.json.
"""
from __future__ import annotations

import json
import logging
import platform
import sys
from pathlib import Path

from flow.config import load_recipe
from flow.io import atomic_write_json
from flow.pipeline import run_recipe

RECIPE = Path("build/digits.yaml")
OUT = Path("build/bench")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from hw_models.rtlsim.bench import bench_chain

    recipe = load_recipe(RECIPE)
    results = run_recipe(recipe)
    finn_dir = Path("build/out") / recipe.name / "05_finn"
    chain = finn_dir / results["finn"]["paths"]["dataflow_rtl"]
    report = {
        "machine": {"python": sys.version.split()[0], "cpu": platform.processor() or platform.machine()},
        "recipe": str(RECIPE),
        "step_seconds": {step: r.get("seconds") for step, r in results.items()},
        "rtlsim": bench_chain(chain, OUT / "rtlsim", frames=500),
        "rtlsim_backpressure_30": bench_chain(chain, OUT / "rtlsim_bp", frames=500,
                                              backpressure=0.3, cache_dir=OUT / "rtlsim" / "cache"),
    }
    atomic_write_json(OUT / "bench.json", report)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
