"""Run frames through a built simulator: pack, stream, unpack, measure cycles.

API (sim = build_simulator(generate_rtl(model, out_dir))):
- run_frames(sim, frames, ...) -> (outputs, RunStats): a graph with one input and one output
  stream (a dataflow partition); frames and outputs hold one NHWC tensor per row.
- run_streams(sim, [frames_in0, frames_in1, ...], ...) -> ([outputs_out0, ...], RunStats): any
  number of top streams (sim.inputs / sim.outputs, in the model's graph input / output order),
  e.g. a single AddStreams (two inputs) or DuplicateStreams (two outputs) node.
- Both take backpressure (probability that an output's TREADY is low in a cycle) and gaps
  (probability that an input, between words, offers no word in a cycle; an offered word is held
  until accepted, as AXI wants), both seeded by seed (shard s uses seed + s).
- A run that delivers no output word for stall_cycles (default: generous against FINN's
  estimates) stops with a SimulationError naming where the stream stopped; a residual block
  whose skip FIFO is too shallow is named in one line (diagnose.residual_deadlock).

Frames can be split into shards simulated by parallel processes (each from reset); their
measurements are pooled (see RunStats).
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hw_models.errors import SimulationError
from hw_models.rtlsim.build import Simulator
from hw_models.rtlsim.compile import Progress, default_jobs, sha256_file
from hw_models.rtlsim.cycles import MAX_CYCLES, NodeCycles, check_cycle_bound
from hw_models.rtlsim.diagnose import (
    DeadlockError,
    _diagnose,
    _failure,
    default_stall_cycles,
    edge_words_per_frame,
    node_cycles,
    sim_cycles,
)
from hw_models.rtlsim.packing import _n32, pack_stream, unpack_stream
from hw_models.rtlsim.stitch import node_edges

log = logging.getLogger(__name__)

# A shard restarts the pipeline (reset, fill); fewer frames than this per shard do not pay.
MIN_FRAMES_PER_SHARD = 32

@dataclass
class RunStats:
    """Cycle measurements of one run (JSON-able via to_json).

    With several shards each one starts from reset: frame_done counts cycles within the frame's
    own shard, total_cycles sums the shards, first_frame_latency is shard 0's, and the steady
    and per-node figures pool the shards' steady windows.
    """

    frames: int
    total_cycles: int  # cycles until the last output word left (summed over shards)
    first_frame_latency: int  # cycles from the first input cycle until frame 0's last word left
    steady_cycles_per_frame: float | None  # mean output interval after a shard's first frame
    frame_done: list[int]  # cycle in which each frame's last output word left (0-based)
    sim_cycles_per_s: float  # all simulated cycles (incl. reset, drain) per wall second
    wall_s: float
    cpu_s: float  # CPU time of the simulator processes (all shards)
    backpressure: float
    seed: int
    shards: int = 1
    nodes: list[NodeCycles] = field(default_factory=list)  # per node, topological (node_stats)
    gaps: float = 0.0
    fifo_maxcount: dict[str, int] = field(default_factory=dict)  # per FIFO gauge (sizing builds)

    def to_json(self) -> dict:
        """Plain data."""
        return asdict(self)

    @property
    def bottleneck(self) -> NodeCycles | None:
        """The node with the most busy cycles per frame (None with fewer than two frames).

        Nodes right after a saturated one (a width converter splitting its words) look just as
        busy, since they pass its rate on; of those within a cycle of the maximum, the first in
        topological order is the one that sets the pace.
        """
        timed = [n for n in self.nodes if n.busy is not None]
        if not timed:
            return None
        most = max(n.busy for n in timed)
        return next(n for n in timed if n.busy >= most - 1)

    def node_table(self) -> str:
        """Plain-text table: per node measured busy/interval/stall cycles vs FINN's estimate."""

        def f(x: float | None) -> str:
            return "-" if x is None else f"{x:.1f}"

        rows = [("node", "op", "est", "busy", "interval", "blocked", "starved", "busy/est")]
        for n in self.nodes:
            ratio = n.over_estimate
            rows.append((n.name, n.op_type.removesuffix("_rtl"), str(n.estimated), f(n.busy),
                         f(n.interval), f(n.blocked), f(n.starved),
                         "-" if ratio is None else f"{ratio:.2f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                      enumerate(zip(r, widths))) for r in rows
        )


# ---------------------------------------------------------------------------------------------
# Running the harness


@dataclass
class _Job:
    """One harness process over one shard of the frames."""

    folder: Path
    frames: int
    n_in: int  # input words given, all inputs
    proc: subprocess.Popen
    done: int = 0  # output frames reported so far
    reader: threading.Thread | None = None
    messages: list[str] = field(default_factory=list)  # other stdout lines (Verilog $display)


def _check_runnable(sim: Simulator, backpressure: float, gaps: float,
                    fifo_limits: list[int] | None) -> None:
    if not 0.0 <= backpressure < 1.0:
        raise SimulationError(f"backpressure must be in [0, 1), got {backpressure}")
    if not 0.0 <= gaps < 1.0:
        raise SimulationError(f"gaps must be in [0, 1), got {gaps}")
    if not sim.binary.is_file():
        raise SimulationError(f"simulator binary {sim.binary} is missing; rebuild it")
    if sha256_file(sim.binary) != sim.binary_sha256:
        raise SimulationError(
            f"damaged cache entry {sim.build_dir}: its simulator binary differs from the one "
            "built (no or another checksum in simulator.json); delete the folder and build again"
        )
    missing = [f for f in sim.data_files if not Path(f).is_file()]
    if missing:
        raise SimulationError(
            "memory init files of the built simulator are missing (outputs would be wrong): "
            + ", ".join(missing)
        )
    changed = [f for f, h in zip(sim.data_files, sim.data_sha256)
               if hashlib.sha256(Path(f).read_bytes()).hexdigest() != h]
    if changed:
        raise SimulationError(
            "memory init files of the built simulator changed after the build (outputs would "
            "be wrong): " + ", ".join(changed) + f"; delete {sim.build_dir} and build again"
        )
    if fifo_limits is not None and len(fifo_limits) != len(sim.fifo_gauges):
        raise SimulationError(
            f"fifo_limits lists {len(fifo_limits)} capacities; the simulator has "
            f"{len(sim.fifo_gauges)} FIFO gauges ({', '.join(sim.fifo_gauges) or 'none'})"
        )


def _csv(xs) -> str:
    return ",".join(str(int(x)) for x in xs)


@dataclass(frozen=True)
class _Settings:
    """What every shard of one run shares."""

    backpressure: float
    gaps: float
    seed: int
    stall_cycles: int
    node_stats: bool
    fifo_limits: list[int] | None


def _start(sim: Simulator, words: list[np.ndarray], frames: int, folder: Path, shard: int,
           cfg: _Settings) -> _Job:
    """Write one shard's inputs and run.cfg (see harness.cpp) and start the harness on it."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, w in enumerate(words):
        np.ascontiguousarray(w, dtype="<u4").tofile(folder / f"in{k}.bin")
    ends = [node_edges(sim.edges, i) for i in range(len(sim.nodes))]
    lines = {
        "frames": frames, "backpressure": repr(float(cfg.backpressure)),
        "gaps": repr(float(cfg.gaps)), "seed": int(cfg.seed) + shard,
        "stall_cycles": int(cfg.stall_cycles), "max_cycles": MAX_CYCLES,
        "node_stats": int(cfg.node_stats), "in_words": _csv(len(w) for w in words),
        "out_wpf": _csv(s.words for s in sim.outputs),
        "edge_wpf": _csv(edge_words_per_frame(sim)),
        "node_in": ";".join(_csv(i) for i, _ in ends),
        "node_out": ";".join(_csv(o) for _, o in ends),
    }
    if sim.fifo_gauges:
        limits = cfg.fifo_limits if cfg.fifo_limits is not None else [0] * len(sim.fifo_gauges)
        lines["fifo_limits"] = _csv(limits)
    (folder / "run.cfg").write_text("".join(f"{k} {v}\n" for k, v in lines.items()))
    with open(folder / "stderr.txt", "w") as err:
        proc = subprocess.Popen([str(sim.binary), str(folder)], stdout=subprocess.PIPE,
                                stderr=err, text=True)
    return _Job(folder, frames, sum(len(w) for w in words), proc)


def _follow(jobs: list[_Job], total: int, progress: Progress | None) -> None:
    """Read each harness's stdout until it closes: 'frames N' lines report progress (the sum
    over the shards), other lines are the model's messages."""
    lock = threading.Lock()

    def read(job: _Job) -> None:
        assert job.proc.stdout is not None
        for line in job.proc.stdout:
            if not line.startswith("frames "):
                job.messages.append(line)
            elif progress:
                with lock:
                    job.done = int(line.split()[1])
                    progress("simulate", sum(j.done for j in jobs), total)

    for job in jobs:
        job.reader = threading.Thread(target=read, args=(job,), daemon=True)
        job.reader.start()


def _wait(sim: Simulator, jobs: list[_Job], timeout_s: float | None) -> None:
    """Wait for every harness; SimulationError if the time runs out (the caller kills them)."""
    end = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        for job in jobs:
            job.proc.wait(None if end is None else max(0.0, end - time.monotonic()))
    except subprocess.TimeoutExpired as exc:
        raise SimulationError(
            f"RTL simulation of {', '.join(n.name for n in sim.nodes)} ran past "
            f"{timeout_s} s"
        ) from exc


def _collect(sim: Simulator, job: _Job) -> tuple[list[np.ndarray], dict]:
    """One finished shard's output words (per top output) and stats; SimulationError for any
    failure."""
    code = job.proc.returncode
    if code != 0 or not (job.folder / "stats.json").is_file():
        text = (job.folder / "stderr.txt").read_text() + "".join(job.messages)
        raise SimulationError(_failure(sim, code, text))
    unread = [m.strip() for m in job.messages if "$readmem" in m]
    if unread:  # Verilator only warns, and simulates with zeros in their place
        raise SimulationError(
            "the simulator could not read its memory init files (outputs would be wrong):\n"
            + "\n".join(unread[:5])
        )
    st = json.loads((job.folder / "stats.json").read_text())
    want = sum(s.words for s in sim.outputs) * job.frames
    if st["status"] == "stall":
        raise DeadlockError(_diagnose(sim, st, job.frames, job.n_in))
    if st["status"] == "cycle_limit":
        raise SimulationError(
            f"RTL simulation stopped at the cycle bound ({MAX_CYCLES} cycles, "
            f"hw_models.rtlsim.cycles.MAX_CYCLES) with {st['words_out']} of {want} output "
            "words; give a lower backpressure or fewer frames"
        )
    # Nodes may legitimately emit some of the next frame early (FMPadding's leading padding
    # rows need no input); a whole surplus frame means the output shape is wrong.
    if st["surplus_words"] >= min(s.words for s in sim.outputs):
        last = sim.nodes[next(e.src for e in sim.edges if e.dst < 0)]
        raise SimulationError(
            f"the graph produced {st['surplus_words']} output words after the "
            f"{want} expected, with no more input: the output shape of "
            f"{last.name} ({last.op_type}) disagrees with the hardware"
        )
    outs = []
    for k, s in enumerate(sim.outputs):
        raw = np.fromfile(job.folder / f"out{k}.bin", dtype="<u4")
        outs.append(raw.reshape(-1, _n32(s.width)))
    return outs, st


def run_words(
    sim: Simulator,
    words: np.ndarray,
    out_words: int,
    frames: int,
    backpressure: float = 0.0,
    seed: int = 0,
    stall_cycles: int | None = None,
    timeout_s: float | None = None,
    node_stats: bool = True,
    fifo_limits: list[int] | None = None,
    gaps: float = 0.0,
) -> tuple[np.ndarray, dict]:
    """Stream raw input words (pack_frames' rows) in one process; output words, raw stats
    (one input and one output stream)."""
    _single(sim, "run_words")
    if out_words != sim.outputs[0].words:
        raise SimulationError(
            f"out_words {out_words} differs from the graph's {sim.outputs[0].words} output "
            "words per frame"
        )
    cfg = _settings(sim, backpressure, gaps, seed, stall_cycles, node_stats, fifo_limits)
    outs, stats, _ = _run_shards(sim, [[np.asarray(words)]], [frames], cfg, timeout_s, None)
    return outs[0][0], stats[0]


def _single(sim: Simulator, fn: str) -> None:
    if len(sim.inputs) != 1 or len(sim.outputs) != 1:
        raise SimulationError(
            f"{fn} streams one input and one output; this graph has {len(sim.inputs)} input and "
            f"{len(sim.outputs)} output streams: use hw_models.rtlsim.runner.run_streams"
        )


def _settings(sim: Simulator, backpressure: float, gaps: float, seed: int,
              stall_cycles: int | None, node_stats: bool,
              fifo_limits: list[int] | None) -> _Settings:
    _check_runnable(sim, backpressure, gaps, fifo_limits)
    if stall_cycles is None:
        stall_cycles = default_stall_cycles(sim, backpressure, gaps)
    return _Settings(backpressure, gaps, seed, stall_cycles, node_stats, fifo_limits)


def _run_shards(sim: Simulator, words: list[list[np.ndarray]], frames: list[int],
                cfg: _Settings, timeout_s: float | None, progress: Progress | None
                ) -> tuple[list[list[np.ndarray]], list[dict], float]:
    """Run the shards (each a list of words per top input) in parallel processes; their
    outputs (per shard, per top output), stats and the wall time."""
    check_cycle_bound(max(sim_cycles(sim, f, cfg.backpressure, cfg.gaps) for f in frames),
                      sum(frames), cfg.backpressure)
    if progress:
        progress("simulate", 0, sum(frames))
    jobs: list[_Job] = []
    with tempfile.TemporaryDirectory(prefix="rtlsim_run_") as td:
        t0 = time.monotonic()
        try:
            for s, (w, f) in enumerate(zip(words, frames)):
                jobs.append(_start(sim, w, f, Path(td) / str(s), s, cfg))
            _follow(jobs, sum(frames), progress)
            _wait(sim, jobs, timeout_s)
        finally:  # an error or an interrupt leaves no simulator running
            for job in jobs:
                if job.proc.poll() is None:
                    job.proc.kill()
                    job.proc.wait()
                if job.reader is not None:
                    job.reader.join()
        wall = time.monotonic() - t0
        results = [_collect(sim, job) for job in jobs]
    if progress:
        progress("simulate", sum(frames), sum(frames))
    return [r[0] for r in results], [r[1] for r in results], wall


def shard_sizes(n: int, shards: int | None) -> list[int]:
    """Frames per shard: `shards` near-equal parts, or by CPUs and MIN_FRAMES_PER_SHARD."""
    if shards is None:
        shards = min(default_jobs(), max(1, n // MIN_FRAMES_PER_SHARD))
    if shards < 1:
        raise SimulationError(f"shards must be at least 1, got {shards}")
    shards = min(shards, n)
    return [n // shards + (s < n % shards) for s in range(shards)]


def run_streams(
    sim: Simulator,
    inputs: list[np.ndarray],
    backpressure: float = 0.0,
    seed: int = 0,
    stall_cycles: int | None = None,
    timeout_s: float | None = None,
    shards: int | None = None,
    node_stats: bool = True,
    progress: Progress | None = None,
    fifo_limits: list[int] | None = None,
    gaps: float = 0.0,
) -> tuple[list[np.ndarray], RunStats]:
    """Simulate frames on every top stream: inputs[k] holds the frames of in{k}_V (one NHWC
    tensor per row, the same number of frames each); the outputs of each out{k}_V, and the
    cycle stats (a frame is done when every output delivered it). Options as run_frames'."""
    if len(inputs) != len(sim.inputs):
        raise SimulationError(
            f"{len(inputs)} input arrays given; the graph has {len(sim.inputs)} input streams "
            f"({', '.join(s.tensor for s in sim.inputs)})"
        )
    arrays = [np.asarray(x) for x in inputs]
    counts = {int(x.shape[0]) if x.ndim else 0 for x in arrays}
    if len(counts) != 1 or min(counts) < 1:
        raise SimulationError(
            f"every input stream needs the same number (>= 1) of frames, got {sorted(counts)}")
    n = counts.pop()
    cfg = _settings(sim, backpressure, gaps, seed, stall_cycles, node_stats, fifo_limits)
    sizes = shard_sizes(n, shards)
    bounds = np.cumsum([0] + sizes)
    packed = [pack_stream(s, x) for s, x in zip(sim.inputs, arrays)]
    parts = [[w[bounds[i] * s.words:bounds[i + 1] * s.words] for w, s in zip(packed, sim.inputs)]
             for i in range(len(sizes))]
    outs, stats, wall = _run_shards(sim, parts, sizes, cfg, timeout_s, progress)
    outputs = [unpack_stream(s, np.concatenate([o[k] for o in outs]), n)
               for k, s in enumerate(sim.outputs)]
    run = _pool_stats(sim, stats, n, wall, cfg, node_stats)
    log.debug(
        "rtlsim: %d frames in %d shard(s), %d cycles (latency %d, %.1f cycles/frame steady), "
        "%.0f cycles/s",
        n, len(sizes), run.total_cycles, run.first_frame_latency,
        run.steady_cycles_per_frame or float("nan"), run.sim_cycles_per_s,
    )
    return outputs, run


def run_frames(
    sim: Simulator,
    frames: np.ndarray,
    backpressure: float = 0.0,
    seed: int = 0,
    stall_cycles: int | None = None,
    timeout_s: float | None = None,
    shards: int | None = None,
    node_stats: bool = True,
    progress: Progress | None = None,
    fifo_limits: list[int] | None = None,
    gaps: float = 0.0,
) -> tuple[np.ndarray, RunStats]:
    """Simulate frames (one NHWC input tensor per row); outputs (one per row) and cycle stats.

    backpressure: probability that the output consumer is not ready in a cycle (seeded; shard s
    uses seed + s).
    gaps: probability that the input, between words, offers no word in a cycle (seeded).
    stall_cycles: fail with SimulationError when no output word leaves for this many cycles.
    shards: parallel processes, each simulating a contiguous part of the frames from reset
    (default: one per CPU, at least MIN_FRAMES_PER_SHARD frames each).
    node_stats: measure per-node cycles (RunStats.nodes); off saves a few % of the time.
    progress: called as progress("simulate", frames done, frames) while it runs.
    fifo_limits: capacity per FIFO gauge of a sizing build (0: unbounded, the default).
    """
    _single(sim, "run_frames")
    frames = np.asarray(frames)
    if frames.ndim < 1 or frames.shape[0] < 1:
        raise SimulationError("run_frames needs at least one frame")
    outs, run = run_streams(sim, [frames], backpressure, seed, stall_cycles, timeout_s, shards,
                            node_stats, progress, fifo_limits, gaps)
    return outs[0], run


def _pool_stats(sim: Simulator, stats: list[dict], n: int, wall: float, cfg: _Settings,
                node_stats: bool) -> RunStats:
    """RunStats of all shards (see RunStats for how shards are pooled)."""
    done = [[int(c) for c in st["frame_done"]] for st in stats]
    steps = sum(len(d) - 1 for d in done)
    steady = sum(d[-1] - d[0] for d in done) / steps if steps else None
    cycles = sum(st["cycles"] for st in stats)
    maxcount = {}
    if sim.fifo_gauges:
        maxcount = {name: max(int(st["fifo_maxcount"][k]) for st in stats)
                    for k, name in enumerate(sim.fifo_gauges)}
    return RunStats(
        frames=n,
        total_cycles=sum(d[-1] + 1 for d in done),
        first_frame_latency=done[0][0] + 1,
        steady_cycles_per_frame=steady,
        frame_done=[c for d in done for c in d],
        sim_cycles_per_s=cycles / wall if wall > 0 else float("inf"),
        wall_s=wall,
        cpu_s=sum(float(st["cpu_s"]) for st in stats),
        backpressure=cfg.backpressure,
        gaps=cfg.gaps,
        seed=cfg.seed,
        shards=len(stats),
        nodes=node_cycles(sim, stats) if node_stats else [],
        fifo_maxcount=maxcount,
    )
