"""FIFO depths sized by simulation, with Verilator.

FINN sizes FIFOs with its own simulator (unbounded gauges, depth = highest occupancy). Here one
build turns every StreamingFIFO into a depth-limited gauge whose capacity is a run-time input
(fifo_gauge_limit.sv), so trying a depth costs one short simulation, not a build:

1. unbounded gauges: the deep-FIFO cycles per frame and each FIFO's highest occupancy;
2. per FIFO, dearest first (width x depth), the smallest depth whose measured cycles per frame
   stay within `tolerance` of the deep figure, the FIFOs sized so far kept at their new depths
   (a search over depths, `jobs` candidates simulated at once per round);
3. one build of the model with the new depths, FINN's real FIFO RTL, to check the figure; if
   it misses the tolerance, the FIFOs get their highest occupancy (FINN's own rule), checked
   by one more build.

A gauge of capacity c stands for fifo.sv's capacity at a depth: max(depth, 5) as a shift
register (fifo.sv never builds fewer than four SRL stages plus its output register), the depth
otherwise.

On a graph (forks and joins) a depth that deadlocks a residual block (its skip FIFO shallower
than the branch holds, see residual.py) simply misses the target: the search never returns it.
"""

from __future__ import annotations

import copy
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from qonnx.core.modelwrapper import ModelWrapper

from hw_models.errors import HardwareError
from hw_models.resources import Resources
from hw_models.rtlsim.build import Simulator, build_simulator
from hw_models.rtlsim.compile import Progress, default_jobs
from hw_models.rtlsim.diagnose import DeadlockError
from hw_models.rtlsim.hdl import generate_rtl, load_model
from hw_models.rtlsim.packing import random_frames
from hw_models.rtlsim.runner import run_frames
from hw_models.rules import MAX_FIFO_DEPTH, MIN_FIFO_DEPTH

log = logging.getLogger(__name__)


class FifoSizingError(HardwareError):
    """The model's FIFOs cannot be sized (no FIFOs, bad tolerance or frames)."""


class FifoDepth(BaseModel):
    """One FIFO before and after sizing, with FINN's resource estimate of each."""

    model_config = ConfigDict(frozen=True)

    name: str
    width_bits: int
    depth_before: int
    max_occupancy: int  # highest fill with unbounded FIFOs
    depth_after: int
    before: Resources
    after: Resources


class FifoSizingReport(BaseModel):
    """What size_fifos measured and changed (cycles are steady cycles per frame)."""

    model_config = ConfigDict(frozen=True)

    fpgapart: str
    frames: int
    tolerance: float
    cycles_per_frame_deep: float  # unbounded gauges
    cycles_per_frame_given: float  # gauges at the given depths
    cycles_per_frame_sized: float  # gauges at the new depths
    cycles_per_frame_verified: float | None  # FINN's FIFO RTL at the new depths (verify=True)
    sized_by: Literal["search", "search_padded", "given", "max_occupancy"]  # the depths used
    fifos: list[FifoDepth]
    resources_before: Resources  # FINN's estimate, StreamingFIFO nodes only
    resources_after: Resources
    lut_saved: float
    bram18_saved: float
    uram_saved: float
    builds: int
    probes: int  # simulations of the sizing build
    seconds: float


def _fifo_nodes(model: ModelWrapper) -> list:
    return [n for n in model.graph.node if n.op_type.startswith("StreamingFIFO")]


def _estimate(node, depth: int, fpgapart: str) -> tuple[Resources, str]:
    """FINN's resource estimate of a FIFO node at `depth`, and the RAM style it resolves to."""
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(copy.deepcopy(node))
    inst.set_nodeattr("depth", int(depth))
    res = Resources(lut=inst.lut_estimation(fpgapart), bram18=inst.bram_estimation(fpgapart),
                    uram=inst.uram_estimation(fpgapart))
    return res, inst.resolve_ram_style()


class _Prober:
    """Steady cycles per frame of the sizing build at given FIFO depths (counts its runs)."""

    def __init__(self, sim: Simulator, nodes: list, frames: np.ndarray, fpgapart: str):
        self.sim, self.frames, self.probes = sim, frames, 0
        self.nodes = {n.name: n for n in nodes}
        self.fpgapart = fpgapart

    def capacity(self, name: str, depth: int) -> int:
        """Words fifo.sv holds at this depth (a shift register never fewer than 5)."""
        if depth <= 0:
            return 0
        style = _estimate(self.nodes[name], depth, self.fpgapart)[1]
        return max(depth, 5) if style == "srl" else depth

    def cycles(self, depths: dict[str, int]) -> tuple[float, dict[str, int]]:
        """Steady cycles per frame and highest occupancies with these depths (0: unbounded);
        infinite cycles where the depths deadlock the graph."""
        limits = [self.capacity(g, depths[g]) for g in self.sim.fifo_gauges]
        self.probes += 1
        try:
            _, st = run_frames(self.sim, self.frames, shards=1, node_stats=False,
                               fifo_limits=limits)
        except DeadlockError:
            return float("inf"), {}
        if st.steady_cycles_per_frame is None:
            raise FifoSizingError("FIFO sizing needs at least two frames")
        return st.steady_cycles_per_frame, st.fifo_maxcount

    def many(self, configs: list[dict[str, int]], jobs: int) -> list[float]:
        """cycles() of several configurations, `jobs` at a time."""
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            return [c for c, _ in pool.map(self.cycles, configs)]


def _smallest(prober: _Prober, depths: dict[str, int], name: str, target: float,
              jobs: int) -> int:
    """Smallest depth of FIFO `name` (others as in `depths`) within the target cycles.

    The current depth meets the target; the least depth is tried first (most FIFOs take it),
    then the range is cut at `jobs` points per round, simulated at once.
    """
    lo, hi = MIN_FIFO_DEPTH, depths[name]
    if lo >= hi or prober.many([{**depths, name: lo}], 1)[0] <= target:
        return min(lo, hi)
    lo += 1  # depths below lo miss the target, hi meets it
    while lo < hi:
        k = min(jobs, hi - lo)
        cands = sorted({lo + (hi - lo) * j // (k + 1) for j in range(1, k + 1)})
        res = prober.many([{**depths, name: c} for c in cands], jobs)
        ok = [c for c, cyc in zip(cands, res) if cyc <= target]
        hi = min(ok, default=hi)
        lo = max([c + 1 for c, cyc in zip(cands, res) if cyc > target and c < hi], default=lo)
    return hi


def _search(prober: _Prober, fifos: list, start: dict[str, int], target: float, jobs: int,
            progress: Progress | None) -> dict[str, int]:
    """Greedy: each FIFO, dearest first, down to its smallest depth within the target."""
    depths = dict(start)
    order = sorted(fifos, key=lambda n: -_width(n) * start[n.name])
    for i, node in enumerate(order):
        depths[node.name] = _smallest(prober, depths, node.name, target, jobs)
        if progress:
            progress("size_fifos", i + 1, len(order))
    return depths


def _verify(model: ModelWrapper, depths: dict[str, int], out_dir: Path, fpgapart: str,
            frames: np.ndarray, cache_dir, jobs: int, progress) -> tuple[ModelWrapper, float]:
    """The model with these depths, and its steady cycles per frame with FINN's FIFO RTL."""
    sized = _with_depths(model, depths)
    gen = generate_rtl(sized, out_dir, fpgapart=fpgapart)
    sim = build_simulator(gen, cache_dir=cache_dir, jobs=jobs, progress=progress)
    try:
        _, st = run_frames(sim, frames, shards=1, node_stats=False)
    except DeadlockError as exc:
        log.warning("FIFO sizing: %s", exc)
        return sized, float("inf")
    return sized, float(st.steady_cycles_per_frame or 0.0)


def size_fifos(
    model: ModelWrapper | str | Path,
    out_dir: str | Path,
    fpgapart: str,
    tolerance: float = 0.01,
    frames: np.ndarray | None = None,
    n_frames: int = 20,
    cache_dir: str | Path | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    verify: bool = True,
) -> tuple[ModelWrapper, FifoSizingReport]:
    """The folded RTL model with its FIFO depths sized by simulation, and the report.

    Depths are the smallest keeping the steady cycles per frame within `tolerance` (0.01: 1 %)
    of the deep-FIFO figure, measured on `frames` (default `n_frames` random frames). HDL goes
    to out_dir/given and out_dir/sized; builds are cached in cache_dir. progress gets the build
    phases and ("size_fifos", FIFOs done, FIFOs).
    """
    t0 = time.monotonic()
    model = load_model(model)
    if not 0.0 <= tolerance < 1.0:
        raise FifoSizingError(f"tolerance must be in [0, 1), got {tolerance}")
    fifos = _fifo_nodes(model)
    if not fifos:
        raise FifoSizingError("the model has no StreamingFIFO nodes to size")
    jobs = jobs or default_jobs()
    gen = generate_rtl(model, Path(out_dir) / "given", fpgapart=fpgapart)
    sim = build_simulator(gen, cache_dir=cache_dir, jobs=jobs, progress=progress,
                          fifo_gauges=True)
    frames = random_frames(gen, n_frames) if frames is None else np.asarray(frames)
    prober = _Prober(sim, _fifo_nodes(gen), frames, fpgapart)
    given = {n.name: int(_attr(n, "depth")) for n in fifos}
    deep, occupancy = prober.cycles({name: 0 for name in given})
    target = deep * (1.0 + tolerance)
    by_occ = {name: min(MAX_FIFO_DEPTH, max(MIN_FIFO_DEPTH, occupancy[name])) for name in given}
    depths = _search(prober, fifos, by_occ, target, jobs, progress)
    cyc = {"deep": deep, "given": prober.cycles(given)[0], "builds": 1}
    result, verified, sized_by = _with_depths(model, depths), None, "search"
    # the gauges model capacity, not fifo.sv's 2-cycle latency: if the searched depths miss the
    # target in FINN's FIFO RTL, try them 2 words deeper, then the given depths (never worse
    # than what the model had), then FINN's rule (the highest fill)
    padded = {n: min(MAX_FIFO_DEPTH, d + 2) for n, d in depths.items()}
    attempts = [("search", depths), ("search_padded", padded)]
    if cyc["given"] <= target:
        attempts.append(("given", given))
    attempts += [("max_occupancy", by_occ)] * (depths != by_occ)
    for attempt, cand in attempts if verify else []:
        result, verified = _verify(model, cand, Path(out_dir) / "sized", fpgapart, frames,
                                   cache_dir, jobs, progress)
        cyc["builds"] += 1
        depths, sized_by = cand, attempt
        if verified <= target:
            break
        log.warning("FIFO sizing: %s depths give %.1f cycles/frame with FINN's FIFO RTL, over "
                    "the %.1f target", attempt, verified, target)
    cyc["sized"] = prober.cycles(depths)[0]
    return result, _report(fifos, given, occupancy, depths, fpgapart, frames, tolerance, cyc,
                           verified, sized_by, prober.probes, time.monotonic() - t0)


def _attr(node, name: str):
    from qonnx.custom_op.registry import getCustomOp

    return getCustomOp(node).get_nodeattr(name)


def _width(node) -> int:
    from qonnx.custom_op.registry import getCustomOp

    return int(getCustomOp(node).get_instream_width_padded(0))


def _with_depths(model: ModelWrapper, depths: dict[str, int]) -> ModelWrapper:
    from qonnx.custom_op.registry import getCustomOp

    sized = ModelWrapper(copy.deepcopy(model.model))
    for node in _fifo_nodes(sized):
        getCustomOp(node).set_nodeattr("depth", int(depths[node.name]))
    return sized


def _report(fifos: list, given: dict[str, int], occupancy: dict[str, int],
            depths: dict[str, int], fpgapart: str, frames: np.ndarray, tolerance: float,
            cyc: dict, verified: float | None, sized_by: str, probes: int,
            seconds: float) -> FifoSizingReport:
    rows = []
    for node in fifos:
        name = node.name
        rows.append(FifoDepth(
            name=name, width_bits=_width(node), depth_before=given[name],
            max_occupancy=int(occupancy[name]), depth_after=depths[name],
            before=_estimate(node, given[name], fpgapart)[0],
            after=_estimate(node, depths[name], fpgapart)[0],
        ))
    before = Resources.total(r.before for r in rows)
    after = Resources.total(r.after for r in rows)
    return FifoSizingReport(
        fpgapart=fpgapart, frames=len(frames), tolerance=tolerance,
        cycles_per_frame_deep=cyc["deep"], cycles_per_frame_given=cyc["given"],
        cycles_per_frame_sized=cyc["sized"], cycles_per_frame_verified=verified,
        sized_by=sized_by, fifos=rows, resources_before=before, resources_after=after,
        lut_saved=before.lut - after.lut, bram18_saved=before.bram18 - after.bram18,
        uram_saved=before.uram - after.uram, builds=cyc["builds"], probes=probes,
        seconds=seconds,
    )
