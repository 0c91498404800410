"""Folding optimiser: SIMD/PE of every HW layer of a FINN dataflow graph under a board budget.

Input: a specialised FINN dataflow model (after SpecializeLayers, before InsertDWC/InsertFIFO): a
chain, or a graph with forks (DuplicateStreams) and joins (AddStreams). For a cycle cap T every
layer may take any legal folding whose cycles per frame are <= T; the optimiser picks, by dynamic
programming over the nodes in topological order (a state holds the choices of the nodes whose
outputs still feed nodes to come: both branches of a fork), the foldings that minimise

    sum_r  lambda_r * use_r / cap_r      r in (lut, bram18, uram, dsp), cap_r = budget_r * board_r

where use_r counts the layers, the width converters their stream widths imply and the FIFOs the
flow inserts (all from the calibrated cost model, `hw_models.cost`). The multipliers lambda_r grow
on the resources that overflow (Lagrangian relaxation) until the design fits; T is searched by
bisection. Objective "target": the smallest T no faster than the target frame rate needs (the
fewest resources at min(target, best reachable)); "max_fps": the smallest T that fits.

Legality (FINN's and densiflow's rules): SIMD | MW, PE | MH, MW/SIMD >= 2 for RTL MVAUs
(`rules.mvau_simd_ok`); VVAU PE | channels, SIMD | k_h*k_w; PE | channels for Thresholding, Pool,
GlobalAccPool, DuplicateStreams and AddStreams; sliding-window SIMD | channels, parallel_window
only with SIMD = channels (any SIMD when depthwise); a depthwise sliding window and its VVAU/Pool
share one word layout (its SIMD = their PE; parallel_window exactly when the VVAU's SIMD is the
whole window); and every stream edge, each input of an add included, has an integer width ratio
(the word of one side a multiple of the other's), so no fractional width converter (2 cycles per
word, thousands of LUTs in synthesis) is ever needed. Converters cost what the cost model says,
so an add whose inputs come at its own PE (no converter) is preferred where it is as fast.

`resource_ceiling` gives the closed-form best frame rate the board's DSP/LUT budget allows for the
network's MACs; `finn_figures` estimates a folded model with FINN itself (after InsertDWC and
InsertFIFO), for the optimiser's result and for FINN's SetFolding at the same target.

Modules: `report` (typed inputs and outputs), `choices` (legal foldings per node, the graph),
`optimiser` (the search, `optimise_folding`), `ceiling` (`resource_ceiling`), `finn_view`
(FINN's estimate and SetFolding).
"""
from hw_models.folding.ceiling import resource_ceiling
from hw_models.folding.choices import LUTRAM_MAX_DEPTH, Choice, Slot, foldable_graph, unseen_lutram
from hw_models.folding.finn_view import (
    finn_figures,
    finn_setfolding,
    prefer_rtl_for_unspecialised,
    with_dwc_fifo,
)
from hw_models.folding.optimiser import link_resources, optimise_folding
from hw_models.folding.report import (
    Budget,
    Ceiling,
    DesignFigures,
    FoldingError,
    FoldingReport,
    LayerFolding,
    Objective,
)

__all__ = [
    "LUTRAM_MAX_DEPTH",
    "Budget",
    "Ceiling",
    "Choice",
    "DesignFigures",
    "FoldingError",
    "FoldingReport",
    "LayerFolding",
    "Objective",
    "Slot",
    "finn_figures",
    "finn_setfolding",
    "foldable_graph",
    "link_resources",
    "optimise_folding",
    "prefer_rtl_for_unspecialised",
    "resource_ceiling",
    "unseen_lutram",
    "with_dwc_fifo",
]
