"""Benchmark: build and run a chain's simulator, compare measured cycles with FINN's estimate.

python -m hw_models.rtlsim.bench MODEL.onnx WORK_DIR [--frames N] [--backpressure P]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from hw_models.rtlsim.build import build_simulator
from hw_models.rtlsim.hdl import generate_rtl, load_model
from hw_models.rtlsim.runner import run_frames


def random_frames(model: ModelWrapper, n: int, seed: int = 0) -> np.ndarray:
    """n random frames valid for the model's input datatype (one NHWC tensor per row)."""
    from qonnx.core.datatype import DataType

    name = model.graph.input[0].name
    dt = model.get_tensor_datatype(name)
    shape = (n, *model.get_tensor_shape(name)[1:])
    rng = np.random.default_rng(seed)
    if dt == DataType["BIPOLAR"]:
        return rng.choice([-1.0, 1.0], size=shape).astype(np.float32)
    if not dt.is_integer():
        raise ValueError(f"random_frames supports integer inputs, not {dt.name}")
    return rng.integers(dt.min(), dt.max() + 1, size=shape).astype(np.float32)


def bench_chain(
    model: ModelWrapper | str | Path,
    work_dir: str | Path,
    frames: int = 200,
    backpressure: float = 0.0,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> dict:
    """Generate, build (cold unless cache_dir is warm), rebuild (cached) and run; JSON-able dict.

    With cache_dir None a fresh cache in work_dir is used, so build_s is a cold build that
    includes compiling Verilator's run-time library once (about 15 s of CPU on 2 cores).
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
    _, stats = run_frames(sim, x, backpressure=backpressure, seed=seed)
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


def main(argv: list[str] | None = None) -> None:
    """CLI: print the benchmark dict of one model as JSON."""
    import logging

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="folded, specialized dataflow model (.onnx)")
    p.add_argument("work_dir")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--backpressure", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = bench_chain(a.model, a.work_dir, a.frames, a.backpressure, a.seed, a.cache_dir)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
