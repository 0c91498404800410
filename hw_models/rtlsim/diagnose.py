"""Per-node measurements of a simulation and the diagnosis of a failed one (stalls, assertions)."""
from __future__ import annotations

import re
import signal

from hw_models.errors import SimulationError
from hw_models.rtlsim.build import Simulator
from hw_models.rtlsim.cycles import NodeCycles, expected_cycles
from hw_models.rtlsim.stitch import node_edges


def edge_words_per_frame(sim: Simulator) -> list[int]:
    """Stream words per frame of every edge (stitch.Edge order)."""
    return [e.words for e in sim.edges]


def _pooled(stats: list[dict], last: str, first: str, idx: int, e: int, k: int) -> float:
    """Per-frame mean of a counter's growth over the shards' steady windows of edge e."""
    return sum(st[last][idx] - st[first][idx] for st in stats if st["edge_frames"][e] > 1) / k


def node_cycles(sim: Simulator, stats: list[dict]) -> list[NodeCycles]:
    """Per-node steady cycles per frame, pooled over the shards' per-edge / per-node counters
    (a node's frames are those of its out0_V)."""
    res = []
    for i, node in enumerate(sim.nodes):
        e = node_edges(sim.edges, i)[1][0]
        k = sum(st["edge_frames"][e] - 1 for st in stats if st["edge_frames"][e] > 0)
        interval = busy = blocked = starved = span = None
        if k >= 1:
            interval = _pooled(stats, "edge_done_last", "edge_done_first", e, e, k)
            blocked = _pooled(stats, "node_blocked_last", "node_blocked_first", i, e, k)
            starved = _pooled(stats, "node_starved_last", "node_starved_first", i, e, k)
            busy = interval - blocked - starved
            span = sum(st["edge_span_sum"][e] for st in stats) / sum(
                st["edge_frames"][e] for st in stats)
        res.append(
            NodeCycles(node.name, node.op_type, node.exp_cycles, node.out_words, interval, busy,
                       blocked, starved, span)
        )
    return res


def sim_cycles(sim: Simulator, frames: int, backpressure: float, gaps: float = 0.0) -> float:
    """expected_cycles of `frames` through this graph (FINN's per-node estimates)."""
    est = [n.exp_cycles for n in sim.nodes]
    return expected_cycles(frames, max(est), sum(est), max(s.words for s in sim.outputs),
                           backpressure, max(s.words for s in sim.inputs), gaps)


def default_stall_cycles(sim: Simulator, backpressure: float, gaps: float = 0.0) -> int:
    """No-output bound: generous against FINN's per-node estimates, scaled for backpressure and
    input gaps."""
    total = sum(n.exp_cycles for n in sim.nodes)
    return int((20_000 + 8 * total) / max(1e-3, 1.0 - backpressure) / max(1e-3, 1.0 - gaps))


def _node_state(xf: list, vld: list, rdy: list, ins: list[int], outs: list[int],
                exp: list[int]) -> str:
    """What one node was doing where the stream stopped, from its edges' counts and handshakes."""
    if all(xf[j] >= exp[j] for j in outs):
        return "done"
    if any(vld[j] and not rdy[j] for j in outs):
        return "output not accepted downstream"
    if all(xf[j] >= exp[j] for j in ins):
        return "received all its input, output incomplete"
    if any(vld[j] and not rdy[j] for j in ins):
        return "neither accepts input nor produces output"
    return "waiting for input"


class DeadlockError(SimulationError):
    """No output word came for the stall window while input was pending (message: where)."""


def residual_deadlock(sim: Simulator, st: dict) -> str | None:
    """One line naming the residual block whose fork waits on a full skip path while its join
    waits on the branch (the skip FIFO too shallow for the branch), or None."""
    index = {n.name: i for i, n in enumerate(sim.nodes)}
    vld, rdy = st["edge_vld"], st["edge_rdy"]
    for b in sim.blocks:
        skip_out = node_edges(sim.edges, index[b.fork])[1][b.skip_port]
        branch_in = node_edges(sim.edges, index[b.join])[0][b.branch_port]
        if vld[skip_out] and not rdy[skip_out] and not vld[branch_in]:
            fifos = ", ".join(b.skip_fifos) or "none"
            return (
                f"RTL simulation deadlocked in residual block {b.describe()}: the skip path "
                f"(FIFO {fifos}) holds {b.depth} words of {b.fork}'s output, the branch takes in "
                f"up to {b.need} before the join gets its first word; deepen the skip FIFO to "
                f"hold {b.need} (hw_models.rtlsim.residual.SizeSkipFifos)"
            )
    return None


def _diagnose(sim: Simulator, st: dict, frames: int, n_in: int) -> str:
    """Name where the stream stopped, from per-stream transfer counts and handshake state: one
    line for a residual block's deadlock, else every node's state."""
    deadlock = residual_deadlock(sim, st)
    if deadlock is not None:
        return deadlock
    nodes, edges = sim.nodes, sim.edges
    xf, vld, rdy = st["edge_xfers"], st["edge_vld"], st["edge_rdy"]
    exp = [e.words * frames for e in edges]
    lines, done_in, blocked = [], None, None
    for i, node in enumerate(nodes):
        ins, outs = node_edges(edges, i)
        state = _node_state(xf, vld, rdy, ins, outs, exp)
        if state.startswith("received") and done_in is None:
            done_in = node
        if state.startswith("neither"):
            blocked = node
        lines.append(
            f"  {node.name} ({node.op_type}): in {sum(xf[j] for j in ins)}/"
            f"{sum(exp[j] for j in ins)}, out {sum(xf[j] for j in outs)}/"
            f"{sum(exp[j] for j in outs)} words: {state}"
        )
    need_in = sum(s.words for s in sim.inputs) * frames
    top_out = [j for j, e in enumerate(edges) if e.dst < 0]
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
    elif any(vld[j] and not rdy[j] for j in top_out):
        where = "the graph output was never accepted (output backpressure)"
    else:
        where = "no single node could be blamed"
    order = " -> ".join(n.name for n in nodes)
    return (
        f"RTL simulation stalled: no output word for {st['cycles'] - st['last_out_cycle']} cycles "
        f"(at cycle {st['cycles']}, {st['words_out']} of "
        f"{sum(s.words for s in sim.outputs) * frames} output words, {st['words_in']} of {n_in} "
        f"input words accepted); {where}.\n"
        f"nodes: {order}\n" + "\n".join(lines)
    )


# Verilog assertions that fire inside FINN's RTL, with what is known about them
KNOWN_ASSERTIONS = {
    "Overflowing output queue": (
        "finn-rtllib's RTL MVU/VVU (mvu_vvu_axi.sv) lost an output under downstream "
        "backpressure. With finn-plus 1.6.1 this happens for MVAU_rtl layers folded with SIMD "
        "== MW and VVAU_rtl layers with SIMD == k*k (a whole input vector or window per cycle), "
        "whatever PE; MW/SIMD >= 2 never showed it. The queue is synthesizable logic, so "
        "hardware from this RTL would likely drop data too: fold such layers with MW/SIMD >= 2"
    ),
}


def _failure(sim: Simulator, code: int, text: str) -> str:
    """Message for a simulator that stopped abnormally: a Verilog $error/$fatal/assertion, or a
    crash (a signal), which is the harness's or the binary's fault, not the RTL's."""
    if code < 0:
        sig = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return (
            f"the simulator binary {sim.binary} crashed ({sig}); it matched its build checksum, "
            f"so delete {sim.build_dir} and build again, and report it if that recurs"
        )
    insts = set(re.findall(r"TOP\.rtlsim_top\.(\w+)", text))
    names = {n.name: n for n in sim.nodes}
    hit = [
        names[i] if i in names else names.get(i.removesuffix("_wstrm"))
        for i in sorted(insts)
        if i in names or i.removesuffix("_wstrm") in names
    ]
    where = ", ".join(f"{n.name} ({n.op_type})" for n in hit) or "graph " + " -> ".join(names)
    msgs = [line.strip() for line in text.splitlines() if "%Error" in line or "%Fatal" in line]
    hints = [hint for key, hint in KNOWN_ASSERTIONS.items() if key in text]
    return (
        f"RTL simulation stopped with an error in {where} (exit {code}):\n"
        + "\n".join(msgs[:10] or [text[-2000:]])
        + ("\n" + "\n".join(hints) if hints else "")
    )
