"""The folding optimiser: dynamic programming over the graph's legal foldings, Lagrangian weights
on the resources that overflow, bisection on the cycle cap (see hw_models.folding)."""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hw_models.boards import Board, get_board
from hw_models.cost import (
    Calibration,
    FifoLayer,
    MvauLayer,
    SlidingWindowLayer,
    WidthConverterLayer,
    estimate,
    load_calibration,
)
from hw_models.folding.ceiling import resource_ceiling
from hw_models.folding.choices import Choice, Slot, foldable_graph, node_slot
from hw_models.folding.finn_view import finn_figures, finn_setfolding
from hw_models.folding.report import (
    Budget,
    DesignFigures,
    FoldingError,
    FoldingReport,
    LayerFolding,
    Objective,
    over_caps,
)
from hw_models.resources import Resources
from hw_models.rules import DEFAULT_FIFO_DEPTH, mvau_simd_ok


def _edge_ok(p: Choice, c: Choice, producer: Slot) -> bool:
    """May producer choice p feed consumer choice c without a fractional width converter?"""
    if producer.depthwise_swg:  # the same word layout (FINN: SWG SIMD = consumer PE)
        return p.out_elems == c.in_elems and p.window_word == c.window_word
    a, b = p.out_elems, c.in_elems
    if isinstance(c.layer, MvauLayer) and c.layer.impl == "rtl" and isinstance(
            p.layer, SlidingWindowLayer):
        return mvau_simd_ok(c.layer.mw, c.layer.simd, a)
    return a % b == 0 or b % a == 0


def link_resources(w_out: int, w_in: int, fifo_depth: int, cal: Calibration) -> Resources:
    """FIFO(s) and width converter the flow inserts between streams of these widths (bits)."""
    parts = [FifoLayer(depth=fifo_depth, width=w_out)]
    if w_out != w_in:
        parts += [WidthConverterLayer(in_width=w_out, out_width=w_in),
                  FifoLayer(depth=fifo_depth, width=w_in)]
    return Resources.total(estimate(x, cal).resources for x in parts)


# ------------------------------------------------------------ DP over the graph


@dataclass
class _Problem:
    slots: list[Slot]
    caps: dict[str, float]
    fifo_depth: int
    cal: Calibration
    links: dict[tuple[int, int], Resources] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # the last slot reading each slot's output (-1: none, the output goes to the graph's)
        self.last_use = [-1] * len(self.slots)
        for i, slot in enumerate(self.slots):
            for p in slot.producers:
                if p is not None:
                    self.last_use[p] = i

    def link(self, w_out: int, w_in: int) -> Resources:
        """FIFOs and converter between two stream widths (cached)."""
        key = (w_out, w_in)
        if key not in self.links:
            self.links[key] = link_resources(w_out, w_in, self.fifo_depth, self.cal)
        return self.links[key]

    def inputs(self, i: int, c: Choice, chosen: dict[int, Choice]) -> Resources | None:
        """Resources of the streams into slot i (choice c) from the chosen producers; the FIFO
        of a graph input; None if an edge is not allowed."""
        total, slot = Resources(), self.slots[i]
        for k, p in enumerate(slot.producers):
            w_in = c.in_elems * slot.in_bits[k]
            if p is None:
                total = total + self.link(w_in, w_in)
                continue
            pc = chosen[p]
            if not _edge_ok(pc, c, self.slots[p]):
                return None
            total = total + self.link(pc.out_elems * self.slots[p].out_bits, w_in)
        if self.last_use[i] < 0:  # a graph output: its FIFO
            w = c.out_elems * slot.out_bits
            total = total + self.link(w, w)
        return total


def _scalar(res: Resources, weights: dict[str, float]) -> float:
    return sum(w * res.get(r) for r, w in weights.items())


@dataclass(frozen=True)
class _Path:
    """Choices made so far, newest first (shared tails, no copying)."""

    choice: Choice
    rest: _Path | None

    def choices(self) -> list[Choice]:
        out, node = [], self
        while node is not None:
            out.append(node.choice)
            node = node.rest
        return out[::-1]


def _solve(prob: _Problem, cap_cycles: int, weights: dict[str, float]) -> list[Choice] | None:
    """Cheapest (weighted) legal choices with every node at most cap_cycles; None if none.

    Dynamic programming over the nodes in topological order; a state holds the choices of the
    nodes whose outputs still feed nodes to come (one on a chain; the fork as well inside a
    residual block), keyed by what those consumers see of them (word size and layout), so
    choices that look the same downstream are merged to the cheapest.
    """
    states: dict[tuple, tuple[float, _Path | None, dict[int, Choice]]] = {(): (0.0, None, {})}
    for i, slot in enumerate(prob.slots):
        fast = [c for c in slot.choices if c.cycles <= cap_cycles]
        nxt: dict[tuple, tuple[float, _Path | None, dict[int, Choice]]] = {}
        for cost, path, open_ in states.values():
            for c in fast:
                e = prob.inputs(i, c, open_)
                if e is None:
                    continue
                total = cost + _scalar(e, weights) + _scalar(c.resources, weights)
                still = {p: pc for p, pc in open_.items() if prob.last_use[p] > i}
                if prob.last_use[i] > i:
                    still[i] = c
                key = tuple((p, pc.out_elems, pc.window_word) for p, pc in sorted(still.items()))
                if key not in nxt or total < nxt[key][0]:
                    nxt[key] = (total, _Path(c, path), still)
        if not nxt:
            return None
        states = nxt
    best = min(states.values(), key=lambda v: v[0])[1]
    return best.choices() if best is not None else None


def _design_resources(prob: _Problem, chosen: Sequence[Choice]) -> Resources:
    """Layers + width converters + FIFOs of a chosen folding."""
    picked = dict(enumerate(chosen))
    parts = [c.resources for c in chosen]
    parts += [prob.inputs(i, c, picked) or Resources() for i, c in enumerate(chosen)]
    return Resources.total(parts)


def _fit_at(prob: _Problem, cap_cycles: int, rounds: int = 12) -> tuple[list[Choice] | None, str]:
    """A folding within cap_cycles that fits the caps (Lagrangian weights); else (None, why)."""
    weights = {r: 1.0 / cap for r, cap in prob.caps.items() if cap > 0}
    weights.update({r: 1e6 for r, cap in prob.caps.items() if cap <= 0})
    why = "folding limits"
    for _ in range(rounds):
        chosen = _solve(prob, cap_cycles, weights)
        if chosen is None:
            return None, "folding limits"
        over = over_caps(_design_resources(prob, chosen), prob.caps)
        if not over:
            return chosen, ""
        why = max(over, key=over.get)
        for r, ratio in over.items():
            weights[r] *= min(8.0, 1.0 + 2.0 * ratio)
    return None, why


def _search(prob: _Problem, target_cycles: int, objective: Objective
            ) -> tuple[list[Choice], str]:
    """Smallest feasible cycle cap (not below the target's for "target"), its folding and what
    binds it: "target", "folding limits" (no legal folding is faster) or a resource."""
    floor = max(min(c.cycles for c in s.choices) for s in prob.slots)
    slowest = max(max(c.cycles for c in s.choices) for s in prob.slots)
    reach_target = objective == "target" and target_cycles >= floor
    start = min(max(floor, target_cycles), slowest) if objective == "target" else floor
    chosen, why = _fit_at(prob, start)
    if chosen is not None:
        return chosen, "target" if reach_target else "folding limits"
    best, why_slow = _fit_at(prob, slowest)
    if best is None:
        raise FoldingError(f"no folding fits the budget even fully folded: too much {why_slow}")
    lo, hi, binding = start, slowest, why
    while hi - lo > max(1, lo // 200):  # bisection to 0.5 %
        mid = (lo + hi) // 2
        got, w = _fit_at(prob, mid)
        if got is None:
            lo, binding = mid, w
        else:
            hi, best = mid, got
    return best, binding


def _apply(model, nodes: Sequence, chosen: Sequence[Choice]):
    from qonnx.custom_op.registry import getCustomOp

    model = copy.deepcopy(model)
    by_name = {n.name: n for n in model.graph.node}
    for node, choice in zip(nodes, chosen):
        inst = getCustomOp(by_name[node.name])
        for attr, value in choice.attrs:
            inst.set_nodeattr(attr, value)
    return model


def _layer_rows(slots: Sequence[Slot], chosen: Sequence[Choice]) -> list[LayerFolding]:
    rows = []
    for s, c in zip(slots, chosen):
        a = dict(c.attrs)
        rows.append(LayerFolding(
            name=s.name, op_type=s.op_type, simd=a.get("SIMD"), pe=a.get("PE"),
            parallel_window=bool(a["parallel_window"]) if "parallel_window" in a else None,
            ram_style=a.get("ram_style"), cycles=c.cycles, resources=c.resources))
    return rows


def optimise_folding(
    model,
    board: Board | str,
    target_fps: float,
    budget: Budget | None = None,
    clock_mhz: float | None = None,
    objective: Objective = "target",
    calibration: Calibration | None = None,
    fifo_depth: int = DEFAULT_FIFO_DEPTH,
    compare_with_finn: bool = True,
    progress: Callable[[str], None] | None = None,
):
    """Fold a specialised FINN dataflow graph for `board`; returns (folded model, FoldingReport).

    The model is not modified. `compare_with_finn` adds FINN's estimate of the result and of
    FINN's SetFolding at the same target (a few seconds on larger models).
    """
    import time

    t0 = time.perf_counter()
    board = get_board(board)
    budget = budget or Budget()
    if not target_fps > 0:
        raise FoldingError(f"target_fps must be positive, got {target_fps}")
    clock = float(clock_mhz or board.clock_mhz)
    cal = calibration or load_calibration()
    say = progress or (lambda _msg: None)
    nodes, producers = foldable_graph(model)
    slots = [node_slot(n, board.part, cal, p) for n, p in zip(nodes, producers)]
    prob = _Problem(slots, budget.caps(board), fifo_depth, cal)
    target_cycles = max(1, int(clock * 1e6 / target_fps))
    say(f"folding {len(slots)} layers, {sum(len(s.choices) for s in slots)} choices")
    chosen, binding = _search(prob, target_cycles, objective)
    folded = _apply(model, nodes, chosen)
    used = _design_resources(prob, chosen)
    slow = max(range(len(chosen)), key=lambda i: chosen[i].cycles)
    own = DesignFigures(source=cal.source, fps=clock * 1e6 / chosen[slow].cycles,
                        cycles=chosen[slow].cycles, bottleneck=slots[slow].name, resources=used,
                        fits=not over_caps(used, prob.caps))
    ceiling = resource_ceiling([c.layer for c in chosen], board, budget, clock, cal)
    finn = setf = None
    if compare_with_finn:
        say("FINN's estimate of the result and of SetFolding")
        finn = finn_figures(folded, board, clock, budget, fifo_depth)
        setf = finn_figures(finn_setfolding(model, target_cycles), board, clock, budget,
                            fifo_depth)
    report = FoldingReport(
        board=board.name, clock_mhz=clock, target_fps=target_fps, budget=budget,
        objective=objective, calibration=cal.source, layers=_layer_rows(slots, chosen),
        cost_model=own, ceiling=ceiling, binding=binding, finn=finn, setfolding=setf,
        search_s=time.perf_counter() - t0)
    return folded, report
