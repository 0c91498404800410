"""Benchmarks of the RTL simulator, as JSON-able dicts.

bench_chain: one model's build, cached rebuild, run and measured vs estimated cycles.
compare_speed: cold build, runs (one process, sharded, with and without per-node counters) and
warm run of the code now, next to the same figures of another checkout (the code before a
change), each measured by measure.py in a fresh process. Wall times depend on what else runs on
the machine (each record has the load average); CPU seconds and simulated cycles per CPU second
much less.
bench_fifo_sizing: size_fifos on a model, with its wall time.

python -m hw_models.rtlsim.bench MODEL.onnx WORK_DIR [--frames N] [--baseline ROOT]
    [--fpgapart PART]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from qonnx.core.modelwrapper import ModelWrapper

from hw_models.errors import SimulationError
from hw_models.rtlsim.build import build_simulator
from hw_models.rtlsim.hdl import generate_rtl, load_model
from hw_models.rtlsim.packing import random_frames
from hw_models.rtlsim.runner import run_frames

__all__ = ["bench_chain", "bench_fifo_sizing", "compare_speed", "random_frames"]

MEASURE = Path(__file__).with_name("measure.py")
REPO_ROOT = Path(__file__).resolve().parents[2]


def bench_chain(
    model: ModelWrapper | str | Path,
    work_dir: str | Path,
    frames: int = 200,
    backpressure: float = 0.0,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    shards: int | None = None,
) -> dict:
    """Generate, build (cold unless cache_dir is warm), rebuild (cached) and run; JSON-able dict.

    With cache_dir None a fresh cache in work_dir is used, so build_s is a cold build that
    includes compiling Verilator's run-time library once.
    """
    work = Path(work_dir)
    model = load_model(model)
    if cache_dir is None:
        cache_dir = work / "cache"
        shutil.rmtree(cache_dir, ignore_errors=True)
    t0 = time.monotonic()
    gen = generate_rtl(model, work / "hdl")
    hdl_s = time.monotonic() - t0

    t0 = time.monotonic()
    sim = build_simulator(gen, cache_dir=cache_dir)
    build_s = time.monotonic() - t0
    t0 = time.monotonic()
    again = build_simulator(gen, cache_dir=cache_dir)
    rebuild_s = time.monotonic() - t0

    x = random_frames(gen, frames, seed)
    _, stats = run_frames(sim, x, backpressure=backpressure, seed=seed, shards=shards)
    est = max(n.exp_cycles for n in sim.nodes)
    measured, slowest = stats.steady_cycles_per_frame, stats.bottleneck
    return {
        "nodes": len(sim.nodes),
        "op_types": sorted({n.op_type for n in sim.nodes}),
        "verilator": sim.verilator,
        "hdl_s": round(hdl_s, 3),
        "build_s": round(build_s, 3),
        "build_was_cached": sim.cached,
        "cached_rebuild_s": round(rebuild_s, 3),
        "cached_rebuild_hit": again.cached,
        "frames": frames,
        "shards": stats.shards,
        "backpressure": backpressure,
        "total_cycles": stats.total_cycles,
        "first_frame_latency_cycles": stats.first_frame_latency,
        "measured_cycles_per_frame": measured,
        "finn_estimated_cycles_per_frame": est,
        "measured_over_estimated": (measured / est) if (measured and est) else None,
        "estimated_bottleneck_node": max(sim.nodes, key=lambda n: n.exp_cycles).name,
        "measured_bottleneck_node": slowest.name if slowest else None,
        "measured_bottleneck_busy_cycles": slowest.busy if slowest else None,
        "sim_cycles_per_s": round(stats.sim_cycles_per_s),
        "frames_per_s": round(frames / stats.wall_s, 1) if stats.wall_s > 0 else None,
        "run_wall_s": round(stats.wall_s, 4),
        "build_dir": sim.build_dir,
    }


def measure_checkout(root: str | Path, model: str | Path, work_dir: str | Path,
                     frames: int) -> dict:
    """measure.py's figures for the rtlsim code of the checkout at `root`, in a fresh process."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    args = json.dumps({"model": str(Path(model).resolve()), "work_dir": str(work / "m"),
                       "frames": frames})
    boot = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], " \
           "run_name='__main__')"
    env = dict(os.environ, PYTHONPATH=str(Path(root).resolve()))
    res = subprocess.run([sys.executable, "-c", boot, str(MEASURE), args], cwd=work, env=env,
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SimulationError(f"measuring the rtlsim of {root} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _ratio(now: float | None, before: float | None) -> float | None:
    return None if not now or not before else round(now / before, 3)


def compare_speed(model: str | Path, work_dir: str | Path, frames: int = 359,
                  baseline_root: str | Path | None = None) -> dict:
    """The code now and (if given) the checkout at baseline_root, measured the same way."""
    work = Path(work_dir)
    now = measure_checkout(REPO_ROOT, model, work / "now", frames)
    out: dict = {"now": now}
    if baseline_root is None:
        return out
    before = measure_checkout(baseline_root, model, work / "before", frames)
    best = max(now["runs"].values(), key=lambda r: r["sim_cycles_per_s"])
    out["before"] = before
    out["same_outputs"] = all(
        r["outputs_sha"] == before["runs"]["default"]["outputs_sha"] for r in now["runs"].values()
    )
    out["now_over_before"] = {
        "sim_cycles_per_cpu_s": _ratio(now["runs"]["default"]["sim_cycles_per_cpu_s"],
                                       before["runs"]["default"]["sim_cycles_per_cpu_s"]),
        "cold_total_s": _ratio(now["cold_total_s"], before["cold_total_s"]),
        "cold_build_cpu_s": _ratio(now["cold_build_cpu_s"], before["cold_build_cpu_s"]),
        "warm_s": _ratio(now["warm_s"], before["warm_s"]),
        "best_sim_cycles_per_s": _ratio(best["sim_cycles_per_s"],
                                        before["runs"]["default"]["sim_cycles_per_s"]),
        "best_frames_per_wall_s": _ratio(best["frames_per_wall_s"],
                                         before["runs"]["default"]["frames_per_wall_s"]),
    }
    return out


def bench_fifo_sizing(model: str | Path, work_dir: str | Path, fpgapart: str,
                      cache_dir: str | Path | None = None, tolerance: float = 0.01) -> dict:
    """size_fifos on the model (fresh cache in work_dir unless given); its report and wall time."""
    from hw_models.rtlsim.fifo_sizing import size_fifos

    work = Path(work_dir)
    if cache_dir is None:
        cache_dir = work / "cache"
        shutil.rmtree(cache_dir, ignore_errors=True)
    t0 = time.monotonic()
    _, report = size_fifos(model, work / "hdl", fpgapart, tolerance=tolerance,
                           cache_dir=cache_dir)
    return {"wall_s": round(time.monotonic() - t0, 3), "report": report.model_dump()}


def main(argv: list[str] | None = None) -> None:
    """CLI: print compare_speed (and bench_fifo_sizing with --fpgapart) as JSON."""
    import logging

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="folded, specialized dataflow model (.onnx)")
    p.add_argument("work_dir")
    p.add_argument("--frames", type=int, default=359)
    p.add_argument("--baseline", default=None, help="root of a checkout to compare with")
    p.add_argument("--fpgapart", default=None, help="also size the FIFOs for this part")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = {"speed": compare_speed(a.model, Path(a.work_dir) / "speed", a.frames, a.baseline)}
    if a.fpgapart:
        res["fifo_sizing"] = bench_fifo_sizing(a.model, Path(a.work_dir) / "fifo", a.fpgapart)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
