"""`make bench`: every speed and wall-time figure of densiflow, as JSON (build/bench/bench.json).

Sections, each runnable alone (`python -m flow.bench rtlsim synth`); all run by default:
- steps:   the default recipe run fresh (own caches, so the Verilator build is cold): seconds per
           step;
- rtlsim:  the simulator now against the code of BASELINE_REV (a git worktree of the checkout
           before this speed work), measured side by side in this session: cold build, warm
           run, simulated cycles/s, frames per wall second; FIFO sizing of the default design;
- synth:   Yosys synthesis of the default design, cold (empty cache) and cached;
- hil:     the whole test split over loopback against the board agent's simulation backend,
           next to the direct simulation of the same frames;
- methods: the plan step's wall time of the AQP, qsparse and DFQ recipes (runs resumed when
           they finished before: the recorded time of that run);
- search:  search wall time, trials per minute, FINN-estimate cache hit rate, speed-up from one
           to two worker processes (flow.search.bench);
- graph:   digits_resnet (residual blocks: fork, skip FIFO, add): cold Verilator build and the
           simulated cycles/s over the test split.
The machine's load average is recorded with every section: figures from a busy machine are slow.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from flow.core.io import atomic_write_json, remove_tree
from flow.pipeline import run_recipe
from flow.recipe.config import load_recipe
from flow.run.folder import RunFolder
from flow.run.run import Run
from flow.run.table import STEP_NAMES

OUT = Path("build/bench")
RECIPE = Path("build/digits.yaml")
BASELINE_REV = "bfb691b"  # the last landing before the simulator speed work
GRAPH_RECIPE = Path("build/digits_resnet.yaml")
METHOD_RECIPES = ("build/digits_aqp.yaml", "build/digits_qsparse.yaml", "build/digits_dfq.yaml")
log = logging.getLogger(__name__)


def _machine() -> dict:
    return {"python": sys.version.split()[0], "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def _default_run(root: Path) -> Run:
    recipe = load_recipe(RECIPE)
    run_recipe(recipe, root)
    return Run(recipe, RunFolder.open(root / recipe.name))


def bench_steps() -> dict:
    """The default recipe from scratch (fresh run folder and caches): seconds per step."""
    root = OUT / "runs"
    remove_tree(root)
    env = {k: os.environ.pop(k) for k in ("DENSIFLOW_RTLSIM_CACHE", "DENSIFLOW_SYNTH_CACHE")
           if k in os.environ}
    try:
        t0 = time.perf_counter()
        run = _default_run(root)
        wall = time.perf_counter() - t0
    finally:
        os.environ.update(env)
    return {"recipe": str(RECIPE), "wall_s": round(wall, 1),
            "step_seconds": {s: run.record(s).seconds for s in STEP_NAMES}}


def _baseline_checkout() -> Path | None:
    """A worktree of BASELINE_REV under build/bench (None outside a git checkout)."""
    path = OUT / "baseline"
    if (path / "hw_models").is_dir():
        return path
    res = subprocess.run(["git", "worktree", "add", "--detach", "--force", str(path),
                          BASELINE_REV], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        log.warning("no baseline checkout (%s): rtlsim figures without 'before'",
                    res.stderr.strip())
        return None
    return path


def bench_rtlsim() -> dict:
    from hw_models.rtlsim.bench import bench_fifo_sizing, compare_speed

    run = _default_run(OUT / "runs" if (OUT / "runs").is_dir() else Path("build/out"))
    build = run.finn_build()
    chain = build.path("dataflow_rtl")
    return {"speed": compare_speed(chain, OUT / "rtlsim_speed", len(run.data.x_test),
                                   baseline_root=_baseline_checkout()),
            "fifo_sizing": bench_fifo_sizing(chain, OUT / "fifo_sizing", build.part)}


def bench_synth() -> dict:
    from hw_models.boards import get_board
    from hw_models.rtlsim import generate_rtl
    from hw_models.synth.bench import bench_synthesis

    build = _default_run(Path("build/out")).finn_build()
    board = get_board(build.board)
    rtl = generate_rtl(build.path("dataflow_rtl"), OUT / "synth" / "rtl", fpgapart=board.part,
                       clk_ns=1000.0 / build.clock_mhz)
    return bench_synthesis(rtl, board.family, jobs=os.cpu_count() or 2, fpgapart=board.part)


def bench_graph() -> dict:
    """digits_resnet's simulator: cold build (a fresh cache) and a run over the test split."""
    from hw_models.rtlsim.bench import bench_chain

    recipe = load_recipe(GRAPH_RECIPE)
    run_recipe(recipe, Path("build/out"))
    run = Run(recipe, RunFolder.open(Path("build/out") / recipe.name))
    return {"recipe": str(GRAPH_RECIPE),
            **bench_chain(run.finn_build().path("dataflow_rtl"), OUT / "graph",
                          frames=len(run.data.x_test))}


def bench_hil() -> dict:
    """HIL frames per wall second on the whole test split, beside the direct simulation."""
    from flow.hil.deployment import artefact_hashes, read_token
    from flow.hil.serve import start_agent
    from flow.hil.session import run_hil
    from flow.hil.types import HilOptions
    from flow.hil.wiring import deployment_folder, golden, token_file
    from hw_models.rtlsim import load_simulator, run_frames

    run = _default_run(Path("build/out"))
    folder, gold = deployment_folder(run), golden(run)

    with start_agent(folder, token_file(run), timeout_s=60) as agent:
        t0 = time.perf_counter()
        res = run_hil(agent.target, read_token(token_file(run)), gold, artefact_hashes(folder),
                      OUT / "hil_journal.jsonl", HilOptions(fresh=True, latency_probes=0))
        call_s = time.perf_counter() - t0
    manifest = json.loads((folder / "hil.json").read_text())
    sim_dir = Path(manifest["sim_dir"])
    sim = load_simulator(sim_dir if sim_dir.is_absolute() else folder / sim_dir)
    t0 = time.perf_counter()
    run_frames(sim, gold.inputs, node_stats=False)
    direct_s = time.perf_counter() - t0
    return {"frames": res.frames, "mismatches": res.mismatches, "bit_exact": res.bit_exact,
            "hil_frames_per_wall_s": round(res.wall_fps, 1),
            "hil_frames_per_call_s": round(res.frames / call_s, 1),
            "direct_simulation_frames_per_wall_s": round(len(gold.inputs) / direct_s, 1)}


def bench_methods() -> dict:
    """Wall time of each method's plan step, from its recipe's run."""
    out = {}
    for path in METHOD_RECIPES:
        recipe = load_recipe(path)
        records = run_recipe(recipe, Path("build/out"))
        out[recipe.method.name] = {"recipe": path, "plan_step_s": records["plan"].seconds,
                                   "run_s": round(sum(r.seconds for r in records.values()), 1)}
    return out


def bench_search() -> dict:
    from flow.search.bench import search_bench

    return search_bench(OUT / "search")


SECTIONS: dict[str, Callable[[], dict]] = {
    "steps": bench_steps, "rtlsim": bench_rtlsim, "synth": bench_synth, "hil": bench_hil,
    "methods": bench_methods, "search": bench_search, "graph": bench_graph,
}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = (argv if argv is not None else sys.argv[1:]) or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        print(f"unknown sections {unknown}; allowed: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    path = OUT / "bench.json"
    report = json.loads(path.read_text()) if path.is_file() else {}
    for name in names:
        t0 = time.perf_counter()
        report[name] = {"machine": _machine(), **SECTIONS[name](),
                        "section_wall_s": round(time.perf_counter() - t0, 1)}
        atomic_write_json(path, report)  # each finished section is kept
    print(json.dumps({n: report[n] for n in names}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
