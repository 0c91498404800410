"""Benchmark: synthesise a design cold (empty cache) and again from the cache; JSON-able dict.

python -m hw_models.synth.bench RTL_MODEL.onnx FAMILY [--jobs N] [--fpgapart PART] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

from qonnx.core.modelwrapper import ModelWrapper

from hw_models.synth.design import compare_with_finn, synthesise_design


def _children_cpu_s() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def bench_synthesis(
    rtl_model: ModelWrapper | str | Path,
    family: str,
    jobs: int = 2,
    fpgapart: str | None = None,
    slowest: int = 5,
) -> dict:
    """Cold synthesis (fresh temporary cache) and a cached rerun of one design.

    cold_cpu_s is the CPU time of the Yosys processes; on a shared machine cold_s (wall) also
    depends on what else runs, so the load average is reported beside it.
    """
    with tempfile.TemporaryDirectory(prefix="densiflow_synth_bench_") as cache:
        load = os.getloadavg()[0]
        cpu0, t0 = _children_cpu_s(), time.monotonic()
        cold = synthesise_design(rtl_model, family, cache_dir=cache, jobs=jobs)
        cold_s, cold_cpu = time.monotonic() - t0, _children_cpu_s() - cpu0
        t0 = time.monotonic()
        warm = synthesise_design(rtl_model, family, cache_dir=cache, jobs=jobs)
        cached_s = time.monotonic() - t0
    out = {
        "family": family,
        "yosys": cold.yosys,
        "jobs": jobs,
        "nodes": len(cold.nodes),
        "yosys_runs": round(sum(1 / n.batch_nodes for n in cold.nodes)),
        "cold_s": round(cold_s, 2),
        "cold_cpu_s": round(cold_cpu, 2),
        "load_average_at_start": round(load, 2),
        "cached_s": round(cached_s, 2),
        "cached_all": all(n.cached for n in warm.nodes),
        "same_counts_cached": [n.cells for n in warm.nodes] == [n.cells for n in cold.nodes],
        "slowest_nodes": [
            {"name": n.name, "op_type": n.op_type, "seconds": n.seconds,
             "batch_nodes": n.batch_nodes}
            for n in sorted(cold.nodes, key=lambda n: -n.seconds)[:slowest]
        ],
        "totals": cold.totals.model_dump(),
        "notes": cold.notes,
    }
    if fpgapart:
        comp = compare_with_finn(cold, rtl_model, fpgapart)
        out["finn_estimate"] = {r.resource: r.finn for r in comp.totals}
        out["yosys_over_finn"] = {r.resource: r.ratio for r in comp.totals}
    return out


def main(argv: list[str] | None = None) -> None:
    """CLI: print (and optionally write) the benchmark dict of one design as JSON."""
    import logging

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rtl_model", help="HDL-generated model (rtl_model.onnx of generate_rtl)")
    p.add_argument("family", choices=["xc7", "xcup"])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--fpgapart", default=None, help="part for FINN's estimate beside")
    p.add_argument("--out", default=None, help="also write the JSON here")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = bench_synthesis(a.rtl_model, a.family, a.jobs, a.fpgapart)
    text = json.dumps(res, indent=1, default=str)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
