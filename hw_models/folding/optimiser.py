"""The folding optimiser: dynamic programming over the chain's legal foldings, Lagrangian weights
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
from hw_models.folding.choices import Choice, Slot, foldable_chain, node_slot
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
    if producer.depthwise_swg:
        return p.out_elems == c.in_elems
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


# ------------------------------------------------------------ DP over the chain


@dataclass
class _Problem:
    slots: list[Slot]
    caps: dict[str, float]
    fifo_depth: int
    cal: Calibration
    links: dict[tuple[int, int], Resources] = field(default_factory=dict)

    def link(self, w_out: int, w_in: int) -> Resources:
        """FIFOs and converter between two stream widths (cached)."""
        key = (w_out, w_in)
        if key not in self.links:
            self.links[key] = link_resources(w_out, w_in, self.fifo_depth, self.cal)
        return self.links[key]

    def widths(self, i: int, p: Choice, c: Choice) -> tuple[int, int]:
        return p.out_elems * self.slots[i - 1].out_bits, c.in_elems * self.slots[i].in_bits

    def edge(self, i: int, p: Choice, c: Choice) -> Resources | None:
        """Resources between slot i-1 (choice p) and slot i (choice c); None if not allowed."""
        if not _edge_ok(p, c, self.slots[i - 1]):
            return None
        return self.link(*self.widths(i, p, c))

    def ends(self, first: Choice, last: Choice) -> Resources:
        """FIFOs at the chain's input and output."""
        a = first.in_elems * self.slots[0].in_bits
        b = last.out_elems * self.slots[-1].out_bits
        return self.link(a, a) + self.link(b, b)


def _scalar(res: Resources, weights: dict[str, float]) -> float:
    return sum(w * res.get(r) for r, w in weights.items())


def _solve(prob: _Problem, cap_cycles: int, weights: dict[str, float]) -> list[Choice] | None:
    """Cheapest (weighted) legal choices with every node at most cap_cycles; None if none."""
    layers = []
    for slot in prob.slots:
        fast = [c for c in slot.choices if c.cycles <= cap_cycles]
        if not fast:
            return None
        layers.append(fast)
    best = {id(c): (_scalar(c.resources, weights), [c]) for c in layers[0]}
    for i in range(1, len(layers)):
        nxt = {}
        for c in layers[i]:
            node = _scalar(c.resources, weights)
            cand = None
            for p in layers[i - 1]:
                if id(p) not in best:
                    continue
                e = prob.edge(i, p, c)
                if e is None:
                    continue
                total = best[id(p)][0] + _scalar(e, weights) + node
                if cand is None or total < cand[0]:
                    cand = (total, p)
            if cand is not None:
                nxt[id(c)] = (cand[0], best[id(cand[1])][1] + [c])
        if not nxt:
            return None
        best = nxt
    return min(best.values(), key=lambda v: v[0])[1]


def _design_resources(prob: _Problem, chosen: Sequence[Choice]) -> Resources:
    """Layers + width converters + FIFOs of a chosen folding."""
    parts = [c.resources for c in chosen]
    parts += [prob.link(*prob.widths(i, chosen[i - 1], chosen[i])) for i in range(1, len(chosen))]
    return Resources.total(parts) + prob.ends(chosen[0], chosen[-1])


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
    """Fold a specialised FINN dataflow chain for `board`; returns (folded model, FoldingReport).

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
    nodes = foldable_chain(model)
    slots = [node_slot(n, board.part, cal) for n in nodes]
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
