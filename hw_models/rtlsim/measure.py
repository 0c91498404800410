"""Measure one rtlsim implementation on one chain model: cold build, runs, warm run.

bench.py runs this file in a fresh process, with PYTHONPATH at the checkout to measure, so
that the code before a change and the code now are measured the same way. It uses only the API
both share (generate_rtl, build_simulator, run_frames), and the newer run_frames options
(shards, node_stats) where the code has them.

python measure.py '{"model": ..., "work_dir": ..., "frames": 359}'  -> one JSON object on stdout
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path


def _cpu() -> float:
    """CPU seconds of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn):
    """(result, wall seconds, CPU seconds) of fn()."""
    w, c = time.monotonic(), _cpu()
    res = fn()
    return res, time.monotonic() - w, _cpu() - c


def _run_figures(run_frames, sim, frames, **kw) -> dict:
    """Wall time, simulated cycles/s and frames per wall second of one run_frames call."""
    (out, st), wall, cpu = _timed(lambda: run_frames(sim, frames, **kw))
    return {
        "options": dict(kw),
        "shards": getattr(st, "shards", 1),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "sim_cycles_per_s": round(st.sim_cycles_per_s),
        "sim_cycles_per_cpu_s": round(st.total_cycles / cpu) if cpu > 0 else None,
        "frames_per_wall_s": round(len(frames) / wall, 1),
        "steady_cycles_per_frame": st.steady_cycles_per_frame,
        "outputs_sha": hashlib.sha256(out.tobytes()).hexdigest()[:16],
    }


def measure(model: str, work_dir: str, frames: int, seed: int = 0) -> dict:
    """Cold (fresh cache) build and run, the run variants the code has, and a warm run."""
    t0 = time.monotonic()
    from hw_models.rtlsim import build_simulator, generate_rtl, run_frames
    from hw_models.rtlsim.bench import random_frames

    work = Path(work_dir)
    shutil.rmtree(work, ignore_errors=True)
    import_s = time.monotonic() - t0
    gen, gen_s, gen_cpu = _timed(lambda: generate_rtl(model, work / "hdl"))
    x = random_frames(gen, frames, seed)
    sim, build_s, build_cpu = _timed(lambda: build_simulator(gen, cache_dir=work / "cache"))
    res = {
        "rtlsim": str(Path(inspect.getfile(run_frames)).parent),
        "frames": frames,
        "load_start": os.getloadavg()[0],
        "import_s": round(import_s, 3),
        "generate_rtl_s": round(gen_s, 3),
        "cold_build_s": round(build_s, 3),
        "cold_build_cpu_s": round(build_cpu, 3),
        "runs": {"default": _run_figures(run_frames, sim, x)},
    }
    if "shards" in inspect.signature(run_frames).parameters:
        res["runs"]["one_process"] = _run_figures(run_frames, sim, x, shards=1)
        res["runs"]["one_process_no_node_stats"] = _run_figures(
            run_frames, sim, x, shards=1, node_stats=False)
        res["runs"]["sharded_no_node_stats"] = _run_figures(run_frames, sim, x, node_stats=False)
    res["cold_total_s"] = round(gen_s + build_s + res["runs"]["default"]["wall_s"], 3)
    def warm():
        again = generate_rtl(model, work / "hdl")
        return run_frames(build_simulator(again, cache_dir=work / "cache"), x)

    _, warm_s, _ = _timed(warm)
    res["warm_s"] = round(warm_s, 3)  # generate_rtl + build_simulator (cache hit) + run_frames
    res["load_end"] = os.getloadavg()[0]
    return res


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    print(json.dumps(measure(**args)))
