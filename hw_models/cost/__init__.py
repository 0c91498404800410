"""Analytic cost model: LUT / BRAM18 / URAM / DSP and cycles per frame of FINN HW layers.

A layer is described by typed data (geometry, bit-widths, folding, memory style), never by a FINN
graph, so one estimate takes microseconds. Each resource is a linear combination of structural
*terms* of the layer (multiplier lanes, adder-tree bits, memory tiles of a ladder, stream widths):

    resource(layer) = sum_t  c[node_type][resource][t] * term_t(layer)

The terms are closed forms from the layer's geometry (those FINN-R, FINN's estimators and the RTL
library are built from); the coefficients `c` are data, fitted by `fit_calibration` to samples of
one `ResourceSource` (FINN's estimate, Yosys synthesis, ...) and stored as JSON under
`hw_models/calibration/` (`python -m hw_models.calibrate` regenerates FINN's). Cycles per frame are
FINN's closed forms (`get_exp_cycles`) and need no fitting.

`model_cost` costs every HW node of a FINN dataflow model with this model; `compare_with_finn`
reports its error against FINN's own estimate of the same nodes (median and worst per resource).

Modules, one job each: `layers` (typed layer descriptions), `layer_cycles` (cycles per frame),
`memory` (memory ladders), `terms` (terms per layer kind, each with its `TermKind`),
`calibration` (coefficients: storage, loading, fit), `nodes` (FINN nodes -> layers), `estimate`
(layer and model estimates), `finn_error` (error against FINN's estimate).
"""
from hw_models.cost.calibration import (
    CALIBRATION_DIR,
    Calibration,
    CalibrationSample,
    TermFitError,
    board_calibration,
    calibration_path,
    fit_calibration,
    load_calibration,
    synthesis_calibration,
)
from hw_models.cost.estimate import LayerCost, ModelCost, cost_layers, estimate, model_cost
from hw_models.cost.finn_error import (
    QUANTITIES,
    ErrorReport,
    ErrorSummary,
    NodeError,
    compare_with_finn,
    error_report,
    finn_node_estimates,
)
from hw_models.cost.layer_cycles import layer_cycles
from hw_models.cost.layers import (
    AddStreamsLayer,
    CostModelError,
    DspType,
    DuplicateStreamsLayer,
    FifoLayer,
    GlobalAccPoolLayer,
    Impl,
    LabelSelectLayer,
    Layer,
    MvauLayer,
    OtherLayer,
    PaddingLayer,
    PoolLayer,
    SlidingWindowLayer,
    ThresholdingLayer,
    VvauLayer,
    WidthConverterLayer,
    geometry_only,
)
from hw_models.cost.memory import yosys_memory, yosys_threshold_rom
from hw_models.cost.nodes import (
    dsp_type_of_part,
    is_specialised_hw_node,
    layer_from_node,
    model_layers,
)
from hw_models.cost.terms import (
    TermKind,
    Terms,
    TermTable,
    acc_bits_bound,
    fitted_terms,
    layer_terms,
    mvu_dsp_lanes,
    term_table,
    vpc_structure,
    vvu_dsp_lanes,
)

__all__ = [
    "acc_bits_bound",
    "AddStreamsLayer",
    "board_calibration",
    "Calibration",
    "CALIBRATION_DIR",
    "calibration_path",
    "CalibrationSample",
    "compare_with_finn",
    "cost_layers",
    "CostModelError",
    "dsp_type_of_part",
    "DspType",
    "DuplicateStreamsLayer",
    "error_report",
    "ErrorReport",
    "ErrorSummary",
    "estimate",
    "FifoLayer",
    "finn_node_estimates",
    "fitted_terms",
    "fit_calibration",
    "geometry_only",
    "GlobalAccPoolLayer",
    "Impl",
    "is_specialised_hw_node",
    "LabelSelectLayer",
    "Layer",
    "layer_cycles",
    "layer_from_node",
    "layer_terms",
    "LayerCost",
    "load_calibration",
    "model_cost",
    "model_layers",
    "ModelCost",
    "MvauLayer",
    "mvu_dsp_lanes",
    "NodeError",
    "OtherLayer",
    "PaddingLayer",
    "PoolLayer",
    "QUANTITIES",
    "SlidingWindowLayer",
    "synthesis_calibration",
    "term_table",
    "TermFitError",
    "TermKind",
    "Terms",
    "TermTable",
    "ThresholdingLayer",
    "vpc_structure",
    "vvu_dsp_lanes",
    "VvauLayer",
    "WidthConverterLayer",
    "yosys_memory",
    "yosys_threshold_rom",
]
