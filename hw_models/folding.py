"""Folding optimiser: SIMD/PE of every HW layer of a FINN dataflow chain under a board budget.

Input: a specialised FINN dataflow model (after SpecializeLayers, before InsertDWC/InsertFIFO).
For a cycle cap T every layer may take any legal folding whose cycles per frame are <= T; the
optimiser picks, by dynamic programming over the chain, the foldings that minimise

    sum_r  lambda_r * use_r / cap_r      r in (lut, bram18, uram, dsp), cap_r = budget_r * board_r

where use_r counts the layers, the width converters their stream widths imply and the FIFOs the
flow inserts (all from the calibrated cost model, `hw_models.cost`). The multipliers lambda_r grow
on the resources that overflow (Lagrangian relaxation) until the design fits; T is searched by
bisection. Objective "target": the smallest T no faster than the target frame rate needs (the
fewest resources at min(target, best reachable)); "max_fps": the smallest T that fits.

Legality (FINN's and densiflow's rules): SIMD | MW, PE | MH, MW/SIMD >= 2 for RTL MVAUs
(`rules.mvau_simd_ok`); PE | channels; sliding-window SIMD | channels, parallel_window only with
SIMD = channels; and every stream edge has an integer width ratio (the word of one side a multiple
of the other's), so no fractional width converter (2 cycles per word, thousands of LUTs in
synthesis) is ever needed.

`resource_ceiling` gives the closed-form best frame rate the board's DSP/LUT budget allows for the
network's MACs; `finn_figures` estimates a folded model with FINN itself (after InsertDWC and
InsertFIFO), for the optimiser's result and for FINN's SetFolding at the same target.
"""
from __future__ import annotations

import copy
import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hw_models.boards import Board, get_board
from hw_models.cost import (
    Calibration,
    FifoLayer,
    LabelSelectLayer,
    Layer,
    MvauLayer,
    PaddingLayer,
    PoolLayer,
    SlidingWindowLayer,
    ThresholdingLayer,
    WidthConverterLayer,
    estimate,
    is_specialised_hw_node,
    layer_from_node,
    load_calibration,
)
from hw_models.errors import HardwareError
from hw_models.resources import BUDGETED, Resources, ResourceSource
from hw_models.rules import DEFAULT_FIFO_DEPTH, mvau_simd_ok

log = logging.getLogger(__name__)
Objective = Literal["target", "max_fps"]


class FoldingError(HardwareError):
    """The model cannot be folded as asked (not a chain, or no folding fits the budget)."""


# ------------------------------------------------------------ typed inputs / outputs


class Budget(BaseModel):
    """Fraction of each board resource the design may use."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lut: float = Field(default=1.0, gt=0, le=1)
    bram18: float = Field(default=1.0, gt=0, le=1)
    uram: float = Field(default=1.0, gt=0, le=1)
    dsp: float = Field(default=1.0, gt=0, le=1)

    def caps(self, board: Board) -> dict[str, float]:
        """Usable amount of each budgeted resource on `board`."""
        cap = board.capacity()
        return {r: getattr(self, r) * cap.get(r) for r in BUDGETED}


class LayerFolding(BaseModel):
    """The folding chosen for one node and the cost model's figures for it."""

    model_config = ConfigDict(frozen=True)

    name: str
    op_type: str
    simd: int | None = None
    pe: int | None = None
    parallel_window: bool | None = None
    ram_style: str | None = None
    cycles: int
    resources: Resources


class DesignFigures(BaseModel):
    """Frame rate and resources of one folded design, from one source."""

    model_config = ConfigDict(frozen=True)

    source: ResourceSource
    fps: float
    cycles: int  # slowest node's cycles per frame
    bottleneck: str
    resources: Resources  # layers, width converters and FIFOs
    fits: bool  # within the budget


class Ceiling(BaseModel):
    """Best frame rate the board's DSP/LUT budget allows for the network's MACs (closed form)."""

    model_config = ConfigDict(frozen=True)

    macs_per_frame: int
    dsp_macs: int  # MACs of layers whose multipliers are DSPs (RTL MVAU, HLS resType dsp)
    lut_macs: int  # MACs of layers whose multipliers are LUTs
    dsp_per_mac: float  # MAC-weighted, from the calibrated cost model
    lut_per_mac: float  # of a LUT multiplier lane (HLS MVAU, resType lut) at these bit-widths
    fps: float  # with each layer's multipliers as implemented (the optimiser's bound)
    fps_any_multiplier: float  # if every MAC could go to a DSP or to LUTs, whichever is free


class FoldingReport(BaseModel):
    """What the optimiser chose and how it compares with the ceiling and FINN's SetFolding."""

    model_config = ConfigDict(frozen=True)

    board: str
    clock_mhz: float
    target_fps: float
    budget: Budget
    objective: Objective
    calibration: ResourceSource
    layers: list[LayerFolding]
    cost_model: DesignFigures  # the optimiser's own view (cost model)
    ceiling: Ceiling
    binding: str  # what stops it going faster: "target", a resource, or "folding limits"
    finn: DesignFigures | None = None  # FINN's estimate of the optimiser's folding
    setfolding: DesignFigures | None = None  # FINN's estimate of FINN's SetFolding, same target
    search_s: float = 0.0

    @property
    def fraction_of_bound(self) -> float:
        """Frame rate (FINN's estimate if present) / min(target, ceiling)."""
        fps = (self.finn or self.cost_model).fps
        return fps / min(self.target_fps, self.ceiling.fps)


# ------------------------------------------------------------ choices per node


@dataclass(frozen=True)
class Choice:
    """One legal folding of one node."""

    attrs: tuple[tuple[str, int | str], ...]  # node attrs: SIMD, PE, parallel_window, ram_style
    layer: Layer
    in_elems: int  # elements per input word
    out_elems: int  # elements per output word
    cycles: int
    resources: Resources


@dataclass(frozen=True)
class Slot:
    """One node of the chain and its legal foldings."""

    name: str
    op_type: str
    in_bits: int
    out_bits: int
    choices: tuple[Choice, ...]
    depthwise_swg: bool = False  # its consumer must take the same word (Pool/VVAU)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


LUTRAM_MAX_DEPTH = 512  # weight memories at most this deep may be offered as LUTRAM


def _mvau_options(x: MvauLayer) -> list[tuple[dict, int, int]]:
    """SIMD | MW (RTL: MW/SIMD >= 2), PE | MH; shallow weight memories also as LUTRAM."""
    simds = [s for s in _divisors(x.mw) if x.impl == "hls" or mvau_simd_ok(x.mw, s)]
    out = []
    for s in simds:
        for p in _divisors(x.mh):
            out.append(({"SIMD": s, "PE": p, "ram_style": "auto"}, s, p))
            if x.mw * x.mh // (s * p) <= LUTRAM_MAX_DEPTH:
                out.append(({"SIMD": s, "PE": p, "ram_style": "distributed"}, s, p))
    return out


def _swg_options(x: SlidingWindowLayer) -> list[tuple[dict, int, int]]:
    out = [({"SIMD": s, "parallel_window": 0}, s, s) for s in _divisors(x.channels)]
    if not x.depthwise and x.kernel != (1, 1) and 1 not in x.ifm_dim:
        k = x.kernel[0] * x.kernel[1]
        out.append(({"SIMD": x.channels, "parallel_window": 1}, x.channels, x.channels * k))
    return out


def _options(x: Layer) -> list[tuple[dict, int, int]]:
    """(attrs, in_elems, out_elems) of every legal folding of a layer."""
    if isinstance(x, MvauLayer):
        return _mvau_options(x)
    if isinstance(x, SlidingWindowLayer):
        return _swg_options(x)
    if isinstance(x, (ThresholdingLayer, PoolLayer)):
        return [({"PE": p}, p, p) for p in _divisors(x.channels)]
    if isinstance(x, PaddingLayer):
        return [({"SIMD": s}, s, s) for s in _divisors(x.channels)]
    if isinstance(x, LabelSelectLayer):
        return [({"PE": p}, p, 1) for p in _divisors(x.labels)]
    return []


_FIELD = {"SIMD": "simd", "PE": "pe", "parallel_window": "parallel_window",
          "ram_style": "ram_style"}


def unseen_lutram(layer: Layer, cal: Calibration) -> float:
    """LUTs of an RTL MVAU's LUTRAM weights where the calibration counts none (FINN's estimate).

    FINN estimates 0 LUT for every RTL MVAU, so LUTRAM weights would look free; they are charged
    at the calibration's own LUTRAM rate for HLS MVAU weights (FINN-R: P*Q*W*ceil(WMEM/64)).
    A calibration from synthesis counts them itself.
    """
    if not (isinstance(layer, MvauLayer) and layer.impl == "rtl"
            and layer.ram_style == "distributed") or cal.source != ResourceSource.FINN_ESTIMATE:
        return 0.0
    if cal.coefficients.get("MVAU_rtl", {}).get("lut", {}).get("weights_lutram"):
        return 0.0
    rate = cal.coefficients.get("MVAU_hls", {}).get("lut", {}).get("weights_lutram", 1.0)
    wmem = layer.mw * layer.mh // (layer.simd * layer.pe)
    return rate * layer.pe * layer.simd * layer.weight_bits * math.ceil(wmem / 64)


def _slot(node, part: str, cal: Calibration) -> Slot:
    """The node's legal foldings, each costed by the cost model."""
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    base = layer_from_node(node, part)
    in_bits = inst.get_input_datatype(0).bitwidth()
    out_bits = inst.get_output_datatype(0).bitwidth()
    choices = []
    for attrs, i, o in _options(base):
        upd = {_FIELD[k]: bool(v) if k == "parallel_window" else v for k, v in attrs.items()}
        layer = base.model_copy(update=upd)
        cost = estimate(layer, cal)
        res = cost.resources + Resources(lut=unseen_lutram(layer, cal))
        choices.append(Choice(tuple(attrs.items()), layer, i, o, cost.cycles, res))
    if not choices:  # not foldable here: keep it as it is
        cost = estimate(base, cal)
        i = int(inst.get_folded_input_shape(0)[-1])
        o = int(inst.get_folded_output_shape(0)[-1])
        choices.append(Choice((), base, i, o, cost.cycles, cost.resources))
    dw = isinstance(base, SlidingWindowLayer) and base.depthwise
    return Slot(node.name, node.op_type, in_bits, out_bits, tuple(choices), dw)


def chain_nodes(model) -> list:
    """The HW nodes of a dataflow model, checked to form one chain (each feeds the next)."""
    nodes = [n for n in model.graph.node if is_specialised_hw_node(n)]
    if not nodes:
        raise FoldingError("the model has no specialised FINN HW nodes (run SpecializeLayers)")
    for prev, node in itertools.pairwise(nodes):
        if model.find_producer(node.input[0]) is not prev:
            raise FoldingError(
                f"{node.name} is not fed by {prev.name}: the folding optimiser handles chains "
                "of HW layers only (no branches)")
    if any(n.op_type.startswith("StreamingDataWidthConverter") or n.op_type.startswith(
            "StreamingFIFO") for n in nodes):
        raise FoldingError("the model already has width converters or FIFOs: fold before "
                           "InsertDWC / InsertFIFO")
    return nodes


# ------------------------------------------------------------ edges (converters, FIFOs)


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


def _over(res: Resources, caps: dict[str, float]) -> dict[str, float]:
    """Resources over their cap, and by how much (used / cap)."""
    out = {}
    for r, cap in caps.items():
        used = res.get(r)
        if used > cap + 1e-9:
            out[r] = used / cap if cap > 0 else math.inf
    return out


def _fit_at(prob: _Problem, cap_cycles: int, rounds: int = 12) -> tuple[list[Choice] | None, str]:
    """A folding within cap_cycles that fits the caps (Lagrangian weights); else (None, why)."""
    weights = {r: 1.0 / cap for r, cap in prob.caps.items() if cap > 0}
    weights.update({r: 1e6 for r, cap in prob.caps.items() if cap <= 0})
    why = "folding limits"
    for _ in range(rounds):
        chosen = _solve(prob, cap_cycles, weights)
        if chosen is None:
            return None, "folding limits"
        over = _over(_design_resources(prob, chosen), prob.caps)
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


# ------------------------------------------------------------ ceiling


def _per_mac(x: MvauLayer, cal: Calibration) -> tuple[float, float]:
    """(DSPs, LUTs) per MAC of this layer's multipliers, marginal, from the cost model."""
    big = {"mw": 256, "mh": 256, "vectors": 1, "acc_bits": None}
    lanes = ((64, 64), (8, 8))  # SIMD, PE: the marginal cost of one more lane
    hi, lo = (estimate(x.model_copy(update=big | {"simd": s, "pe": p}), cal).resources
              for s, p in lanes)
    n = lanes[0][0] * lanes[0][1] - lanes[1][0] * lanes[1][1]
    return (hi.dsp - lo.dsp) / n, (hi.lut - lo.lut) / n


def _lut_mult(x: MvauLayer) -> MvauLayer:
    return x.model_copy(update={"impl": "hls", "res_type": "lut", "ram_style": "auto"})


def resource_ceiling(layers: Sequence[Layer], board: Board | str, budget: Budget,
                     clock_mhz: float, calibration: Calibration | None = None) -> Ceiling:
    """Closed form: f_clk * min(DSP cap / sum(MACs * DSP/MAC), LUT cap / sum(MACs * LUT/MAC))."""
    cal = calibration or load_calibration()
    caps = budget.caps(get_board(board))
    mvaus = [x for x in layers if isinstance(x, MvauLayer)]
    if not mvaus:
        raise FoldingError("the model has no MVAU: no MACs to bound the frame rate by")
    macs = [x.mw * x.mh * x.vectors for x in mvaus]
    own = [_per_mac(x, cal) for x in mvaus]
    lutm = [_per_mac(_lut_mult(x), cal)[1] for x in mvaus]
    dsp_need = sum(m * d for m, (d, _) in zip(macs, own))
    lut_need = sum(m * lu for m, (_, lu) in zip(macs, own))
    f = clock_mhz * 1e6
    fps = min(f * caps["dsp"] / dsp_need if dsp_need else math.inf,
              f * caps["lut"] / lut_need if lut_need else math.inf)
    total = sum(macs)
    dsp_macs = sum(m for m, (d, _) in zip(macs, own) if d > 0)
    dpm = dsp_need / dsp_macs if dsp_macs else 0.0
    lpm = sum(m * lu for m, lu in zip(macs, lutm)) / total
    pooled = (caps["dsp"] / dpm if dpm else 0.0) + (caps["lut"] / lpm if lpm else 0.0)
    return Ceiling(macs_per_frame=total, dsp_macs=dsp_macs, lut_macs=total - dsp_macs,
                   dsp_per_mac=dpm, lut_per_mac=lpm, fps=fps, fps_any_multiplier=f * pooled / total)


# ------------------------------------------------------------ FINN's own view


def _prefer_rtl(model):
    from qonnx.custom_op.registry import getCustomOp

    for node in model.graph.node:
        if node.domain == "finn.custom_op.fpgadataflow" and node.op_type not in (
                "StreamingDataflowPartition",):
            getCustomOp(node).set_nodeattr("preferred_impl_style", "rtl")
    return model


def with_dwc_fifo(model, part: str, fifo_depth: int = DEFAULT_FIFO_DEPTH):
    """A copy with FINN's width converters and FIFOs (fifo_depth words), specialised (RTL first)."""
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.general import GiveUniqueNodeNames

    m = copy.deepcopy(model).transform(InsertDWC())
    m = m.transform(InsertFIFO(create_shallow_fifos=True))
    for node in m.get_nodes_by_op_type("StreamingFIFO"):
        inst = getCustomOp(node)
        inst.set_nodeattr("depth", max(int(inst.get_nodeattr("depth")), fifo_depth))
    m = _prefer_rtl(m).transform(SpecializeLayers(part))
    return m.transform(GiveUniqueNodeNames())


def finn_figures(model, board: Board | str, clock_mhz: float, budget: Budget,
                 fifo_depth: int = DEFAULT_FIFO_DEPTH) -> DesignFigures:
    """FINN's estimate (res_estimation, exp_cycles) of a folded model with converters and FIFOs."""
    from hw_models.cost import finn_node_estimates

    board = get_board(board)
    est = finn_node_estimates(with_dwc_fifo(model, board.part, fifo_depth), board.part)
    slow = max(est.values(), key=lambda c: c.cycles)
    used = Resources.total(c.resources for c in est.values())
    return DesignFigures(source=ResourceSource.FINN_ESTIMATE, fps=clock_mhz * 1e6 / slow.cycles,
                         cycles=slow.cycles, bottleneck=slow.name, resources=used,
                         fits=not _over(used, budget.caps(board)))


def finn_setfolding(model, target_cycles: int, mvau_wwidth_max: int = 36):
    """A copy of the model folded by FINN's own SetFolding (two-pass relaxation, FINN defaults)."""
    from finn.transformation.fpgadataflow.set_folding import SetFolding

    finn_log = logging.getLogger("finn_logger")
    level = finn_log.level
    finn_log.setLevel(logging.ERROR)
    try:
        return copy.deepcopy(model).transform(SetFolding(target_cycles, mvau_wwidth_max))
    finally:
        finn_log.setLevel(level)


# ------------------------------------------------------------ entry point


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
    nodes = chain_nodes(model)
    slots = [_slot(n, board.part, cal) for n in nodes]
    prob = _Problem(slots, budget.caps(board), fifo_depth, cal)
    target_cycles = max(1, int(clock * 1e6 / target_fps))
    say(f"folding {len(slots)} layers, {sum(len(s.choices) for s in slots)} choices")
    chosen, binding = _search(prob, target_cycles, objective)
    folded = _apply(model, nodes, chosen)
    used = _design_resources(prob, chosen)
    slow = max(range(len(chosen)), key=lambda i: chosen[i].cycles)
    own = DesignFigures(source=cal.source, fps=clock * 1e6 / chosen[slow].cycles,
                        cycles=chosen[slow].cycles, bottleneck=slots[slow].name, resources=used,
                        fits=not _over(used, prob.caps))
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
