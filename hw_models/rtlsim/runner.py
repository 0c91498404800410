"""Run frames through a built simulator: pack, stream, unpack, measure cycles."""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hw_models.errors import SimulationError
from hw_models.rtlsim.build import Simulator

log = logging.getLogger(__name__)


@dataclass
class NodeCycles:
    """Measured cycles per frame of one chain node, next to FINN's estimate (JSON-able).

    All values are per frame, over the node's steady window (from the end of its first output
    frame to the end of its last one), so None with fewer than two frames. In a pipeline every
    node settles to the chain's rate, so `interval` alone cannot name a bottleneck: `busy` (the
    interval minus the cycles the node waited on its neighbours) is the node's own cost, the
    number to set against FINN's `estimated` get_exp_cycles().
    """

    name: str
    op_type: str
    estimated: int  # FINN's get_exp_cycles() (0 for DWCs and FIFOs: FINN does not model them)
    words_per_frame: int  # output stream words per frame
    interval: float | None  # cycles between the ends of successive output frames
    busy: float | None  # interval - blocked - starved: the cycles the node itself needed
    blocked: float | None  # cycles its output word waited for the consumer (backpressure)
    starved: float | None  # cycles it produced nothing while its producer offered nothing
    span: float | None  # mean cycles from a frame's first to its last output word

    @property
    def over_estimate(self) -> float | None:
        """busy / estimated (None without an estimate or a steady window)."""
        if self.busy is None or not self.estimated:
            return None
        return self.busy / self.estimated


@dataclass
class RunStats:
    """Cycle measurements of one run (JSON-able via to_json)."""

    frames: int
    total_cycles: int  # cycles until the last output word left
    first_frame_latency: int  # cycles from the first input cycle until frame 0's last word left
    steady_cycles_per_frame: float | None  # mean output interval after the first frame
    frame_done: list[int]  # cycle in which each frame's last output word left (0-based)
    sim_cycles_per_s: float  # all simulated cycles (incl. reset, drain) per wall second
    wall_s: float
    backpressure: float
    seed: int
    nodes: list[NodeCycles] = field(default_factory=list)  # per-node measurement, chain order

    def to_json(self) -> dict:
        """Plain data."""
        return asdict(self)

    @property
    def bottleneck(self) -> NodeCycles | None:
        """The node with the most busy cycles per frame (None with fewer than two frames).

        Nodes right after a saturated one (a width converter splitting its words) look just as
        busy, since they pass its rate on; of those within a cycle of the maximum, the first in
        the chain is the one that sets the pace.
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


def _words_to_u32(words: list[int], bits: int) -> np.ndarray:
    n32 = (bits + 31) // 32
    buf = b"".join(int(w).to_bytes(n32 * 4, "little") for w in words)
    return np.frombuffer(buf, dtype="<u4")


def _u32_to_words(arr: np.ndarray, bits: int) -> list[int]:
    n32 = (bits + 31) // 32
    raw = arr.astype("<u4").tobytes()
    step = n32 * 4
    return [int.from_bytes(raw[i : i + step], "little") for i in range(0, len(raw), step)]


def _representable(x: np.ndarray, dt) -> bool:
    if dt.name == "BIPOLAR":
        return bool(np.isin(x, (-1.0, 1.0)).all())
    if dt.is_integer():
        return bool(((x >= dt.min()) & (x <= dt.max()) & (x == np.round(x))).all())
    return bool(np.vectorize(dt.allowed, otypes=[bool])(x).all())


def pack_frames(sim: Simulator, frames: np.ndarray) -> list[int]:
    """Stream words (Python ints) for frames given as one NHWC input tensor per row."""
    from finn.util.data_packing import npy_to_rtlsim_input
    from qonnx.core.datatype import DataType

    per_frame = int(np.prod(sim.in_shape[1:]))
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim < 1 or frames.size % per_frame or frames.shape[0] * per_frame != frames.size:
        raise SimulationError(
            f"frames of shape {frames.shape} do not hold whole input tensors of shape "
            f"{tuple(sim.in_shape[1:])} (one frame per row)"
        )
    n = frames.shape[0]
    dt = DataType[sim.in_dtype]
    if not _representable(frames, dt):
        raise SimulationError(
            f"input values are not all representable as {dt.name} "
            f"(range {dt.min()}..{dt.max()}{', integers' if dt.is_integer() else ''})"
        )
    if dt.name == "BIPOLAR":
        frames, dt = (frames + 1) / 2, DataType["BINARY"]
    folded = frames.reshape([n] + sim.in_folded[1:])
    return npy_to_rtlsim_input(folded, dt, sim.nodes[0].in_bits)


def unpack_frames(sim: Simulator, words: list[int], n: int) -> np.ndarray:
    """Output tensors (one frame per row, NHWC) from stream words."""
    from finn.util.data_packing import rtlsim_output_to_npy
    from qonnx.core.datatype import DataType

    dt = DataType[sim.out_dtype]
    last = sim.nodes[-1]
    arr = rtlsim_output_to_npy(
        words, None, dt, tuple([n] + sim.out_folded[1:]), last.out_bits, dt.bitwidth()
    )
    return np.asarray(arr, dtype=np.float32).reshape([n] + sim.out_shape[1:])


def edge_words_per_frame(sim: Simulator) -> list[int]:
    """Stream words per frame of every edge: the chain input, then each node's output."""
    return [sim.nodes[0].in_words] + [n.out_words for n in sim.nodes]


def node_cycles(sim: Simulator, st: dict) -> list[NodeCycles]:
    """Per-node steady cycles per frame from the harness's per-edge / per-node counters."""
    res = []
    for i, node in enumerate(sim.nodes):
        e = i + 1
        k = st["edge_frames"][e] - 1  # whole frames in the steady window
        interval = busy = blocked = starved = span = None
        if k >= 1:
            interval = (st["edge_done_last"][e] - st["edge_done_first"][e]) / k
            blocked = (st["node_blocked_last"][i] - st["node_blocked_first"][i]) / k
            starved = (st["node_starved_last"][i] - st["node_starved_first"][i]) / k
            busy = interval - blocked - starved
            span = st["edge_span_sum"][e] / (k + 1)
        res.append(
            NodeCycles(node.name, node.op_type, node.exp_cycles, node.out_words, interval, busy,
                       blocked, starved, span)
        )
    return res


def default_stall_cycles(sim: Simulator, backpressure: float) -> int:
    """No-output bound: generous against FINN's per-node estimates, scaled for backpressure."""
    total = sum(n.exp_cycles for n in sim.nodes)
    return int((20_000 + 8 * total) / max(1e-3, 1.0 - backpressure))


def _diagnose(sim: Simulator, st: dict, frames: int, n_in: int) -> str:
    """Name where the stream stopped, from per-stream transfer counts and handshake state."""
    nodes = sim.nodes
    xf, vld, rdy = st["edge_xfers"], st["edge_vld"], st["edge_rdy"]
    lines, done_in, blocked = [], None, None
    for i, node in enumerate(nodes):
        exp_in, exp_out = node.in_words * frames, node.out_words * frames
        in_blocked = vld[i] and not rdy[i]
        out_blocked = vld[i + 1] and not rdy[i + 1]
        if xf[i + 1] >= exp_out:
            state = "done"
        elif out_blocked:
            state = "output not accepted downstream"
        elif xf[i] >= exp_in:
            state = "received all its input, output incomplete"
            done_in = done_in or node
        elif in_blocked:
            state = "neither accepts input nor produces output"
            blocked = node
        else:
            state = "waiting for input"
        lines.append(
            f"  {node.name} ({node.op_type}): in {xf[i]}/{exp_in}, out {xf[i + 1]}/{exp_out} "
            f"words: {state}"
        )
    need_in = nodes[0].in_words * frames
    if st["words_in"] >= n_in and n_in < need_in:
        where = f"the input ended mid-frame ({n_in} of {need_in} input words were given)"
    elif done_in is not None:
        where = (
            f"node {done_in.name} ({done_in.op_type}) received all its input but its output "
            "is incomplete"
        )
    elif blocked is not None:
        where = (
            f"node {blocked.name} ({blocked.op_type}) stopped accepting input and producing output"
        )
    elif vld[-1] and not rdy[-1]:
        where = "the chain output was never accepted (output backpressure)"
    else:
        where = "no single node could be blamed"
    chain = " -> ".join(n.name for n in nodes)
    return (
        f"RTL simulation stalled: no output word for {st['cycles'] - st['last_out_cycle']} cycles "
        f"(at cycle {st['cycles']}, {st['words_out']} of {nodes[-1].out_words * frames} output "
        f"words, {st['words_in']} of {n_in} input words accepted); {where}.\n"
        f"chain: {chain}\n" + "\n".join(lines)
    )


# Verilog assertions that fire inside FINN's RTL, with what is known about them
KNOWN_ASSERTIONS = {
    "Overflowing output queue": (
        "finn-rtllib's RTL MVU (mvu_vvu_axi.sv) lost an output under downstream backpressure. "
        "With finn-plus 1.6.1 this happens for MVAU_rtl layers folded with SIMD == MW (a whole "
        "input vector per cycle, MW/SIMD = 1), whatever PE; MW/SIMD >= 2 never showed it. The "
        "queue is synthesizable logic, so hardware from this RTL would likely drop data too: "
        "fold such layers with MW/SIMD >= 2"
    ),
}


def _failure(sim: Simulator, code: int, text: str) -> str:
    """Message for a simulator that stopped abnormally (Verilog $error/$fatal/assertion)."""
    import re

    insts = set(re.findall(r"TOP\.rtlsim_top\.(\w+)", text))
    names = {n.name: n for n in sim.nodes}
    hit = [
        names[i] if i in names else names.get(i.removesuffix("_wstrm"))
        for i in sorted(insts)
        if i in names or i.removesuffix("_wstrm") in names
    ]
    where = ", ".join(f"{n.name} ({n.op_type})" for n in hit) or "chain " + " -> ".join(names)
    msgs = [line.strip() for line in text.splitlines() if "%Error" in line or "%Fatal" in line]
    hints = [hint for key, hint in KNOWN_ASSERTIONS.items() if key in text]
    return (
        f"RTL simulation stopped with an error in {where} (exit {code}):\n"
        + "\n".join(msgs[:10] or [text[-2000:]])
        + ("\n" + "\n".join(hints) if hints else "")
    )


def run_words(
    sim: Simulator,
    words: list[int],
    out_words: int,
    frames: int,
    backpressure: float = 0.0,
    seed: int = 0,
    stall_cycles: int | None = None,
    timeout_s: float | None = None,
) -> tuple[list[int], dict]:
    """Stream raw input words, expect `out_words` output words per frame; raw stats dict."""
    if not 0.0 <= backpressure < 1.0:
        raise SimulationError(f"backpressure must be in [0, 1), got {backpressure}")
    if not sim.binary.is_file():
        raise SimulationError(f"simulator binary {sim.binary} is missing; rebuild it")
    missing = [f for f in sim.data_files if not Path(f).is_file()]
    if missing:
        raise SimulationError(
            "memory init files of the built simulator are missing (outputs would be wrong): "
            + ", ".join(missing)
        )
    if stall_cycles is None:
        stall_cycles = default_stall_cycles(sim, backpressure)
    in_bits = sim.nodes[0].in_width
    out_bits = sim.nodes[-1].out_width
    with tempfile.TemporaryDirectory(prefix="rtlsim_run_") as td:
        tdp = Path(td)
        _words_to_u32(words, in_bits).tofile(tdp / "in.bin")
        cmd = [
            str(sim.binary),
            str(tdp / "in.bin"),
            str(tdp / "out.bin"),
            str(tdp / "stats.json"),
            str(len(words)),
            str(out_words),
            str(frames),
            repr(float(backpressure)),
            str(int(seed)),
            str(int(stall_cycles)),
        ]
        cmd.append(",".join(str(w) for w in edge_words_per_frame(sim)))
        t0 = time.monotonic()
        try:
            res = subprocess.run(
                cmd, check=False, capture_output=True, text=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired as exc:
            raise SimulationError(
                f"RTL simulation of chain {', '.join(n.name for n in sim.nodes)} ran past "
                f"{timeout_s} s"
            ) from exc
        wall = time.monotonic() - t0
        if res.returncode != 0 or not (tdp / "stats.json").is_file():
            raise SimulationError(_failure(sim, res.returncode, res.stderr + res.stdout))
        st = json.loads((tdp / "stats.json").read_text())
        raw = np.fromfile(tdp / "out.bin", dtype="<u4")
    st["wall_s"] = wall
    n_edges = len(sim.nodes) + 1
    for k in ("edge_xfers", "edge_last", "edge_vld", "edge_rdy"):
        st[k] = st[k][:n_edges]
    if st["status"] == "stall":
        raise SimulationError(_diagnose(sim, st, frames, len(words)))
    # Nodes may legitimately emit some of the next frame early (FMPadding's leading padding
    # rows need no input); a whole surplus frame means the output shape is wrong.
    if st["surplus_words"] >= out_words:
        raise SimulationError(
            f"the chain produced {st['surplus_words']} output words after the "
            f"{out_words * frames} expected, with no more input: the output shape of "
            f"{sim.nodes[-1].name} ({sim.nodes[-1].op_type}) disagrees with the hardware"
        )
    return _u32_to_words(raw, out_bits), st


def run_frames(
    sim: Simulator,
    frames: np.ndarray,
    backpressure: float = 0.0,
    seed: int = 0,
    stall_cycles: int | None = None,
    timeout_s: float | None = None,
) -> tuple[np.ndarray, RunStats]:
    """Simulate frames (one NHWC input tensor per row); outputs (one per row) and cycle stats.

    backpressure: probability that the output consumer is not ready in a cycle (seeded).
    stall_cycles: fail with SimulationError when no output word leaves for this many cycles.
    """
    frames = np.asarray(frames)
    n = int(frames.shape[0]) if frames.ndim else 0
    if n < 1:
        raise SimulationError("run_frames needs at least one frame")
    words = pack_frames(sim, frames)
    out_wpf = sim.nodes[-1].out_words
    out_words, st = run_words(sim, words, out_wpf, n, backpressure, seed, stall_cycles, timeout_s)
    outputs = unpack_frames(sim, out_words, n)
    done = [int(c) for c in st["frame_done"]]
    steady = float(np.mean(np.diff(done))) if len(done) > 1 else None
    stats = RunStats(
        frames=n,
        total_cycles=done[-1] + 1,
        first_frame_latency=done[0] + 1,
        steady_cycles_per_frame=steady,
        frame_done=done,
        sim_cycles_per_s=st["cycles"] / st["wall_s"] if st["wall_s"] > 0 else float("inf"),
        wall_s=st["wall_s"],
        backpressure=backpressure,
        seed=seed,
        nodes=node_cycles(sim, st),
    )
    log.info(
        "rtlsim: %d frames in %d cycles (latency %d, %.1f cycles/frame steady), %.0f cycles/s",
        n,
        stats.total_cycles,
        stats.first_frame_latency,
        steady or float("nan"),
        stats.sim_cycles_per_s,
    )
    return outputs, stats
