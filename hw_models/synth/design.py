"""Synthesise every node of an HDL-generated dataflow model, in parallel, with a cache."""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from qonnx.core.modelwrapper import ModelWrapper

from hw_models.cache import usable_cache_dir
from hw_models.resources import Resources
from hw_models.rtlsim.hdl import ensure_finn_settings, load_model, unsupported_nodes
from hw_models.rtlsim.sources import rtllib_dir
from hw_models.synth.errors import SynthesisError
from hw_models.synth.report import (
    Comparison,
    NodeSynth,
    SynthReport,
    compare,
    count_cells,
)
from hw_models.synth.yosys import (
    FAMILIES,
    Batch,
    NodeJob,
    NodeRun,
    cached_batch,
    plan_batches,
    prepare_node,
    run_batch,
    yosys_version,
)

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (node name, nodes done, nodes in total)

# Batching (see hw_models.synth.yosys): a node with this many stream bits or more runs alone;
# smaller ones share a Yosys run up to this many stream bits and nodes.
BATCH_COST = 768
BATCH_NODES = 16


def default_cache_dir() -> Path:
    """$DENSIFLOW_SYNTH_CACHE, else ~/.cache/densiflow/synth."""
    env = os.environ.get("DENSIFLOW_SYNTH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "densiflow" / "synth"


def _located(model: ModelWrapper, path: Path | None) -> ModelWrapper:
    """The model with each node's HDL folder found again when the run folder was moved.

    generate_rtl writes out_dir/rtl_model.onnx next to out_dir/<node name>/; a node whose
    recorded code_gen_dir_ipgen no longer exists is pointed at that sibling folder (on a copy).
    """
    from qonnx.custom_op.registry import getCustomOp

    if path is None:
        return model
    moved = {
        n.name for n in model.graph.node
        if not Path(getCustomOp(n).get_nodeattr("code_gen_dir_ipgen") or "").is_dir()
        and (path.parent / n.name).is_dir()
    }
    if not moved:
        return model
    model = ModelWrapper(copy.deepcopy(model.model))
    for node in model.graph.node:
        if node.name in moved:
            getCustomOp(node).set_nodeattr("code_gen_dir_ipgen", str(path.parent / node.name))
    log.info("synth: HDL of %d node(s) found next to %s (run folder moved)", len(moved), path)
    return model


def prepare_design(rtl_model: ModelWrapper | str | Path, family: str) -> list[NodeJob]:
    """The synthesis job of every node of an HDL-generated model, in graph order."""
    if family not in FAMILIES:
        raise SynthesisError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    ensure_finn_settings()
    path = None if isinstance(rtl_model, ModelWrapper) else Path(rtl_model)
    model = _located(load_model(rtl_model), path)
    bad = unsupported_nodes(model)
    if bad:
        raise SynthesisError(
            f"{len(bad)} node(s) have no synthesisable RTL: "
            + "; ".join(f"{b.name} ({b.op_type}): {b.reason}" for b in bad)
        )
    lib = rtllib_dir()
    return [prepare_node(node, lib, family) for node in model.graph.node]


def _node_synth(run: NodeRun) -> NodeSynth:
    return NodeSynth(name=run.name, op_type=run.op_type, counts=count_cells(run.cells),
                     cells=run.cells, seconds=round(run.seconds, 3), cached=run.cached,
                     batch_nodes=run.batch_nodes, key=run.key)


def synthesise_design(
    rtl_model: ModelWrapper | str | Path,
    family: str,
    cache_dir: str | Path | None = None,
    jobs: int = 2,
    progress: Progress | None = None,
) -> SynthReport:
    """Synthesise each node of an HDL-generated model (see hw_models.rtlsim.generate_rtl).

    `family` is Yosys' synth_xilinx family: "xc7" (7-series, Zynq-7000) or "xcup"
    (UltraScale+). Up to `jobs` Yosys processes run at once, each on a batch of nodes; results
    are cached by a hash of everything each batch reads. `progress(name, done, total)` is
    called as each node finishes.
    """
    t0 = time.monotonic()
    node_jobs = prepare_design(rtl_model, family)
    cache = usable_cache_dir(Path(cache_dir) if cache_dir is not None else default_cache_dir(),
                             "DENSIFLOW_SYNTH_CACHE")
    version = yosys_version()
    runs: dict[str, NodeRun] = {}
    batches = plan_batches(node_jobs, BATCH_COST, BATCH_NODES)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run_batch, b, cache) for b in _schedule(batches, cache)]
        try:
            for fut in as_completed(futures):
                for run in fut.result():
                    runs[run.name] = run
                    log.debug("synth: %s %s (%.1f s)", run.name,
                              "cached" if run.cached else "synthesised", run.seconds)
                    if progress is not None:
                        progress(run.name, len(runs), len(node_jobs))
        except BaseException:
            for fut in futures:  # do not start the others; running ones finish
                fut.cancel()
            raise
    notes = sorted({note for run in runs.values() for note in run.notes})
    return SynthReport(
        family=family, yosys=version, nodes=[_node_synth(runs[j.name]) for j in node_jobs],
        wall_seconds=round(time.monotonic() - t0, 3), notes=notes,
    )


def _schedule(batches: list[Batch], cache: Path) -> list[Batch]:
    """Cached batches first, then the biggest first (longest first balances the workers)."""
    return sorted(batches, key=lambda b: (not cached_batch(b, cache), -b.cost))


# ---------------------------------------------------------------------------------------------
# FINN's estimate beside


def finn_estimates(rtl_model: ModelWrapper | str | Path, fpgapart: str) -> dict[str, Resources]:
    """FINN's per-node resource estimate (res_estimation) of the same folded model."""
    from finn.analysis.fpgadataflow.res_estimation import res_estimation

    ensure_finn_settings()
    model = load_model(rtl_model)
    est = model.analysis(lambda m: res_estimation(m, fpgapart))
    return {
        name: Resources(lut=r.get("LUT", 0), bram18=r.get("BRAM_18K", 0), uram=r.get("URAM", 0),
                        dsp=r.get("DSP", 0))
        for name, r in est.items()
    }


def compare_with_finn(
    report: SynthReport, rtl_model: ModelWrapper | str | Path, fpgapart: str | None = None
) -> Comparison:
    """Yosys' counts beside FINN's estimate for the same model, per node and resource."""
    model = load_model(rtl_model)
    part = fpgapart or model.get_metadata_prop("rtlsim_fpgapart")
    if not part:
        raise SynthesisError(
            "no FPGA part for FINN's estimate: pass fpgapart (the model carries no "
            "rtlsim_fpgapart metadata)"
        )
    return compare(report, finn_estimates(model, part), part)
