"""Per-node measurements of a simulation and the diagnosis of a failed one (stalls, assertions)."""
from __future__ import annotations

import re
import signal

from hw_models.rtlsim.build import Simulator
from hw_models.rtlsim.cycles import NodeCycles, expected_cycles


def edge_words_per_frame(sim: Simulator) -> list[int]:
    """Stream words per frame of every edge: the chain input, then each node's output."""
    return [sim.nodes[0].in_words] + [n.out_words for n in sim.nodes]


def _pooled(stats: list[dict], last: str, first: str, idx: int, e: int, k: int) -> float:
    """Per-frame mean of a counter's growth over the shards' steady windows of edge e."""
    return sum(st[last][idx] - st[first][idx] for st in stats if st["edge_frames"][e] > 1) / k


def node_cycles(sim: Simulator, stats: list[dict]) -> list[NodeCycles]:
    """Per-node steady cycles per frame, pooled over the shards' per-edge / per-node counters."""
    res = []
    for i, node in enumerate(sim.nodes):
        e = i + 1
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


def sim_cycles(sim: Simulator, frames: int, backpressure: float) -> float:
    """expected_cycles of `frames` through this chain (FINN's per-node estimates)."""
    est = [n.exp_cycles for n in sim.nodes]
    return expected_cycles(frames, max(est), sum(est), sim.nodes[-1].out_words, backpressure)


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
    where = ", ".join(f"{n.name} ({n.op_type})" for n in hit) or "chain " + " -> ".join(names)
    msgs = [line.strip() for line in text.splitlines() if "%Error" in line or "%Fatal" in line]
    hints = [hint for key, hint in KNOWN_ASSERTIONS.items() if key in text]
    return (
        f"RTL simulation stopped with an error in {where} (exit {code}):\n"
        + "\n".join(msgs[:10] or [text[-2000:]])
        + ("\n" + "\n".join(hints) if hints else "")
    )
