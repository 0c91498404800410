"""QONNX -> FINN dataflow: streamline, HW layers, RTL specialisation, folding, estimates.

The stages mirror the step bodies of FINN's `finn/builder/build_dataflow_steps.py` (which is never
imported: it needs Vivado at import time). Each stage is a small function `model -> model`;
`build_dataflow` runs them in order, saves every intermediate ONNX file in the work folder and
returns a JSON-serialisable `FinnEstimate`:

  qonnx_to_finn -> tidy_up -> streamline -> convert_to_hw (standalone thresholds)
  -> minimize_bit_width  ......................... python-executable HW model ("hw_python")
  -> create_dataflow_partition ................... parent + child ("dataflow_python")
  -> specialize_layers (RTL preferred) -> set_folding (clock / target fps; RTL MVAU refolded)
  -> minimize_bit_width -> insert_dwc_fifo (fixed-depth FIFOs) -> annotate_cycles ("dataflow_rtl")
"""
from __future__ import annotations

import copy
import math
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flow.errors import ModelError, VerificationError
from flow.io import atomic_write_json
from hw_models.boards import Board, get_board
from hw_models.cycles import pipeline_performance
from hw_models.resources import Resources, ResourceSource, fit

log = logging.getLogger(__name__)

QONNX_QUANT_OPS = ("Quant", "BipolarQuant", "BinaryQuant", "Trunc")
SUPPORTED_OPS = (
    "quantized MatMul/Gemm/Conv (-> MVAU/VVAU), quantized activations MultiThreshold "
    "(-> Thresholding), Im2Col (-> ConvolutionInputGenerator), Pad (-> FMPadding), "
    "MaxPool/AveragePool (-> Pool, HLS only), GlobalAveragePool, TopK (-> LabelSelect), "
    "Concat, Split, elementwise Add/Mul/Sub on integers, Transpose (-> Shuffle)"
)
# ops that may stay in software before/after the accelerator (layout changes, output scaling)
SOFTWARE_EDGE_OPS = {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Mul",
                     "Div", "Add", "Sub", "TopK", "ArgMax", "Softmax"}
DEFAULT_FIFO_DEPTH = 32  # words per inter-layer FIFO (see insert_dwc_fifo)
FINN_TO_RES = {"LUT": "LUT", "BRAM_18K": "BRAM18", "URAM": "URAM", "DSP": "DSP"}

Stage = Callable[[Any], Any]  # ModelWrapper -> ModelWrapper (qonnx is imported lazily)


# ----------------------------------------------------------------------------- result


@dataclass
class LayerRow:
    """One HW layer of the final dataflow model and its estimates."""

    name: str
    op_type: str
    impl_style: str  # "rtl" or "hls"
    pe: int | None
    simd: int | None
    lut: float
    bram18: float
    uram: float
    dsp: float
    cycles: int


@dataclass
class FinnEstimate:
    """Plain result of a FINN dataflow build: per-layer rows, totals and file paths."""

    board: str
    part: str
    clock_mhz: float
    target_fps: float
    target_cycles_per_frame: int
    input_dtype: str
    layers: list[LayerRow]
    totals: dict[str, float]  # LUT, BRAM18, URAM, DSP summed over layers
    fit: dict  # hw_models.resources.FitReport.to_dict()
    performance: dict  # hw_models.cycles.Performance.to_dict()
    finn_performance: dict  # FINN's dataflow_performance (cross-check)
    hls_nodes: list[str]  # layers with no RTL implementation (HLS only)
    outside_partition: list[dict]  # {"name", "op_type"} of nodes left in software
    paths: dict[str, str]  # stage -> ONNX file
    verification: dict | None = None  # QONNX vs HW python: {"max_abs_error", "max_rel_error", ...}
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return bool(self.fit["fits"])

    @property
    def fps(self) -> float:
        return float(self.performance["fps"])

    def to_dict(self) -> dict:
        return asdict(self)

    def save_json(self, path: Path | str) -> Path:
        atomic_write_json(Path(path), self.to_dict())
        return Path(path)


# ----------------------------------------------------------------------------- setup


def _init_finn(work_dir: Path) -> None:
    """FINN needs its settings initialised and a build folder before any transformation."""
    # registers every HW op and its variants now: Reshape, for one, registers itself only when
    # the RTL package is first imported, which would make conversion depend on import order
    import finn.custom_op.fpgadataflow.hls  # noqa: F401
    import finn.custom_op.fpgadataflow.rtl  # noqa: F401
    from finn.util.settings import initialize_dummy_settings

    build = Path(os.environ.get("FINN_BUILD_DIR") or work_dir / "finn_build").resolve()
    build.mkdir(parents=True, exist_ok=True)
    os.environ["FINN_BUILD_DIR"] = str(build)
    initialize_dummy_settings()


def _datatype(name: str):
    """The QONNX integer datatype called `name` (an input of 1..16 bits)."""
    from qonnx.core.datatype import DataType

    try:
        dt = DataType[name.upper()]
    except (KeyError, ValueError, AttributeError):
        raise ModelError(
            f"input_dtype {name!r} is not a QONNX datatype; use e.g. 'UINT8' (images 0..255), "
            "'UINT5' (0..31), 'INT8'"
        ) from None
    if not dt.is_integer() or not 1 <= dt.bitwidth() <= 16:
        raise ModelError(
            f"input_dtype {name!r} must be an integer datatype of 1 to 16 bits, such as 'UINT8'"
        )
    return dt


def prepare_qonnx(model, input_dtype: str | None = None, source: str = "model"):
    """Clean up a QONNX model and annotate its input's integer datatype (needed by FINN)."""
    from qonnx.util.cleanup import cleanup_model

    ops = {n.op_type for n in model.graph.node}
    if not ops & {*QONNX_QUANT_OPS, "MultiThreshold"}:
        raise ModelError(
            f"{source} has no QONNX quantization nodes ({', '.join(QONNX_QUANT_OPS)}): it is not "
            "a QONNX model. Export a Brevitas network with brevitas.export.export_qonnx."
        )
    try:
        model = cleanup_model(model)
    except Exception as e:
        raise ModelError(f"{source}: QONNX clean-up failed: {type(e).__name__}: {e}") from e
    inp = model.graph.input[0].name
    if input_dtype is not None:
        model.set_tensor_datatype(inp, _datatype(input_dtype))
    dt = model.get_tensor_datatype(inp)
    if not dt.is_integer():
        raise ModelError(
            f"{source}: input {inp!r} has no integer datatype annotation (it is {dt.name}); FINN "
            "needs one. Pass input_dtype, e.g. 'UINT8' for 8-bit images (0..255) or 'UINT5' for "
            "values 0..16 (the digits data set)."
        )
    return model


# ----------------------------------------------------------------------------- stages


def qonnx_to_finn(model):
    """QONNX Quant nodes -> FINN-ONNX (MultiThreshold activations, integer weights)."""
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
    from finn.transformation.qonnx.quant_act_to_multithreshold import (
        default_filter_function_generator,
    )

    flt = default_filter_function_generator(max_multithreshold_bit_width=8)
    return model.transform(ConvertQONNXtoFINN(filter_function=flt))


def tidy_up(model):
    """Shapes, constant folding, readable names, datatypes (FINN's step_tidy_up)."""
    from finn.transformation.qonnx.give_unique_node_names_recursive import (
        GiveUniqueNodeNamesRecursive,
    )
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import GiveReadableTensorNames, RemoveStaticGraphInputs
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    for t in (InferShapes(), FoldConstants(), GiveUniqueNodeNamesRecursive(),
              GiveReadableTensorNames(), InferDataTypes(), RemoveStaticGraphInputs()):
        model = model.transform(t)
    return model


def streamline(model):
    """Move and absorb float scales/biases into thresholds; lower convs (FINN's step_streamline)."""
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.reorder import MakeMaxPoolNHWC
    from qonnx.transformation.bipolar_to_xnor import ConvertBipolarMatMulToXnorPopcount
    from qonnx.transformation.general import RemoveUnusedTensors
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul

    model = model.transform(absorb.AbsorbScalarBiasIntoMultiThreshold())
    model = model.transform(Streamline())
    if model.get_nodes_by_op_type("Conv"):
        for t in (LowerConvsToMatMul(), MakeMaxPoolNHWC(),
                  absorb.AbsorbTransposeIntoMultiThreshold(), MakeMaxPoolNHWC(),
                  absorb.AbsorbConsecutiveTransposes()):
            model = model.transform(t)
    for t in (ConvertBipolarMatMulToXnorPopcount(), Streamline(),
              absorb.AbsorbScalarMulAddIntoTopK(), InferDataLayouts(), RemoveUnusedTensors()):
        model = model.transform(t)
    return model


ELTWISE_OPS = ["Mul", "Div", "Sub", "Add", "And", "Or", "Xor", "Equal", "Less", "LessOrEqual",
               "Greater", "GreaterOrEqual"]


def _not_float_tail(model, node) -> bool:
    """False for a float elementwise op followed only by such ops up to the output.

    Generalises FINN's `reject_output_dequant` (last Mul only) to a trailing Mul -> Add (e.g.
    Brevitas' TensorNorm): float HW layers exist only as HLS and belong to the host.
    """

    def float_tail(n) -> bool:
        if n.op_type not in ELTWISE_OPS or model.get_tensor_datatype(n.output[0]).name != "FLOAT32":
            return False
        return all(float_tail(s) for s in model.find_direct_successors(n) or [])

    return not float_tail(node)


def _hw_conversions():
    """(trigger op types, transformation) in the order of FINN's step_convert_to_hw."""
    from finn.transformation.fpgadataflow.absorb_into_requant import (
        AbsorbElementwiseOpsIntoRequant,
    )
    from finn.transformation.fpgadataflow.convert_to_hw import (
        binary_matrix_vector_activation as bmvau,
        concat,
        conv_inp_gen,
        crop,
        duplicate_streams,
        elementwise_binary_operation as eltwise,
        fm_padding,
        global_acc_pool,
        hw_softmax,
        label_select,
        layer_norm,
        lookup,
        pad1d,
        pool,
        pool_from_reduce,
        pwpolyf,
        quantized_matrix_vector_activation as mvau,
        relu_as_elementwise_max as relu,
        requant,
        select_token,
        split,
        thresholding,
        upsample,
        vector_vector_activation as vvau,
        where,
    )
    from finn.transformation.move_reshape import RemoveCNVtoFCFlatten

    def requant_layer():
        return requant.InferRequantLayer(bitwidth_threshold=9)

    def eltwise_layer():
        # float de-quantising ops at the output (the last layer's scale) stay in software
        return eltwise.InferElementwiseBinaryOperation(_not_float_tail)

    return [
        # standalone thresholds: high-bit activations -> Requant, the rest -> Thresholding
        (["MultiThreshold", "Quant"], requant_layer),
        (["MultiThreshold"], thresholding.InferThresholdingLayer),
        (["XnorPopcountMatMul"], bmvau.InferBinaryMatrixVectorActivation),
        (["MatMul"], mvau.InferQuantizedMatrixVectorActivation),
        (["MatMul"], vvau.InferVectorVectorActivation),
        (["TopK"], label_select.InferLabelSelectLayer),
        (["MultiThreshold", "Quant"], requant_layer),
        (["MultiThreshold"], thresholding.InferThresholdingLayer),
        (["Pad"], fm_padding.InferFMPadding),
        (["MaxPool", "AveragePool", "MaxPoolNHWC", "QuantAvgPool2d"], pool.InferPool),
        (["ReduceMax", "ReduceSum", "ReduceMean"], pool_from_reduce.InferPoolFromReduce),
        (["Im2Col"], conv_inp_gen.InferConvInpGen),
        (["ConvolutionInputGenerator"], RemoveCNVtoFCFlatten),
        (["Concat"], pad1d.InferPad1DLayer),
        (["Concat"], concat.InferConcatLayer),
        (["Split"], split.InferSplitLayer),
        (ELTWISE_OPS, eltwise_layer),
        (["Where"], where.InferWhereLayer),
        (["Relu"], relu.InferReLUAsElementwiseMax),
        (["Upsample"], upsample.InferUpsample),
        (["GlobalAveragePool"], global_acc_pool.InferGlobalAccPoolLayer),
        (["Gather"], select_token.InferSelectTokenLayer),
        (["Gather"], crop.InferCrop),
        (["Gather"], lookup.InferLookupLayer),
        (["Softmax"], hw_softmax.InferHWSoftmax),
        (["PWPolyF", "Gelu", "Sigmoid", "Tanh", "Erf"], pwpolyf.InferPWPolyFLayer),
        (["LayerNormalization"], layer_norm.InferLayerNorm),
        (["Crop"], crop.InferCrop),
        ([], duplicate_streams.InferDuplicateStreamsLayer),  # [] = always (graph forks)
        (["Requant"], AbsorbElementwiseOpsIntoRequant),
    ]


def convert_to_hw(model):
    """Supported nodes -> FINN HW layers, standalone thresholds (FINN's step_convert_to_hw)."""
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.fpgadataflow.convert_to_hw.reshape import InferReshape
    from finn.transformation.fpgadataflow.convert_to_hw.shuffle import InferShuffle
    from finn.transformation.move_reshape import RemoveCNVtoFCFlatten
    from finn.transformation.qonnx.give_unique_node_names_recursive import (
        GiveUniqueNodeNamesRecursive,
    )
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    for op_types, make in _hw_conversions():
        if not op_types or any(model.get_nodes_by_op_type(op) for op in op_types):
            model = model.transform(make())
    for t in (absorb.AbsorbConsecutiveTransposes(), RemoveCNVtoFCFlatten(),
              GiveUniqueNodeNamesRecursive(), InferDataLayouts(), InferDataTypes(), InferShapes(),
              InferReshape()):
        model = model.transform(t)
    if model.get_nodes_by_op_type("Transpose"):
        # the first Transpose (NCHW -> NHWC of the input) stays in software, as in FINN
        model = model.transform(InferShuffle())
    return model


def minimize_bit_width(model):
    """Tighten weight/accumulator widths, round and clip thresholds (FINN's _minimize_bit_width).

    HDL generation needs integer thresholds, so RoundAndClipThresholds always runs.
    """
    from finn.transformation.fpgadataflow.minimize_accumulator_width import (
        MinimizeAccumulatorWidth,
    )
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from qonnx.transformation.infer_datatypes import InferDataTypes

    for t in (MinimizeWeightBitWidth(), MinimizeAccumulatorWidth(), InferDataTypes(),
              RoundAndClipThresholds(), InferDataTypes(), MinimizeWeightBitWidth(),
              InferDataTypes()):
        model = model.transform(t)
    return model


def is_hw_node(node) -> bool:
    return node.domain.startswith("finn.custom_op.fpgadataflow")


def nodes_outside_hw(model) -> tuple[list, list]:
    """Non-HW nodes split into (between HW layers: blocking, at the start/end: software)."""
    hw = {n.name for n in model.graph.node if is_hw_node(n)}

    def reaches_hw(node, step) -> bool:
        seen, todo = set(), list(step(node) or [])
        while todo:
            n = todo.pop()
            if n.name in hw:
                return True
            if n.name not in seen:
                seen.add(n.name)
                todo.extend(step(n) or [])
        return False

    between, edge = [], []
    for n in model.graph.node:
        if n.name in hw:
            continue
        inside = reaches_hw(n, model.find_direct_predecessors) and reaches_hw(
            n, model.find_direct_successors
        )
        (between if inside else edge).append(n)
    return between, edge


def check_hw_coverage(model, source: str = "model") -> list[dict]:
    """Raise ModelError unless every node is a HW layer or light glue at the graph's start/end.

    Returns the glue nodes left in software ({"name", "op_type"}), e.g. the input's NCHW->NHWC
    Transpose and the output's de-quantising Mul.
    """
    between, edge = nodes_outside_hw(model)
    bad = between + [n for n in edge if n.op_type not in SOFTWARE_EDGE_OPS]
    if bad or not any(is_hw_node(n) for n in model.graph.node):
        listed = ", ".join(f"{n.name} ({n.op_type})" for n in bad or edge)
        raise ModelError(
            f"{source}: these nodes could not be converted to FINN HW layers: {listed}. "
            f"Supported: {SUPPORTED_OPS}. A MatMul/Conv stays unconverted when its input or "
            "weights are not quantized to integers (quantize the activation before it with a "
            "QuantIdentity/QuantReLU and use a Brevitas weight quantizer)."
        )
    return [{"name": n.name, "op_type": n.op_type} for n in edge]


def create_dataflow_partition(model, partition_dir: Path):
    """Move the HW layers into one StreamingDataflowPartition; returns (parent, child)."""
    from finn.transformation.fpgadataflow.create_dataflow_partition import CreateDataflowPartition
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    parent = model.transform(CreateDataflowPartition(partition_model_dir=str(partition_dir)))
    sdps = parent.get_nodes_by_op_type("StreamingDataflowPartition")
    if len(sdps) != 1:
        raise ModelError(f"expected one dataflow partition, FINN made {len(sdps)}")
    child = ModelWrapper(getCustomOp(sdps[0]).get_nodeattr("model"))
    return parent, child


def _prefer_rtl(model):
    from qonnx.custom_op.registry import getCustomOp

    for node in model.graph.node:
        if is_hw_node(node) and not node.op_type.endswith(("_rtl", "_hls")):
            getCustomOp(node).set_nodeattr("preferred_impl_style", "rtl")
    return model


def specialize_layers(model, part: str):
    """Pick the RTL variant of every HW layer where FINN has one for `part`, else HLS."""
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from finn.transformation.qonnx.give_unique_node_names_recursive import (
        GiveUniqueNodeNamesRecursive,
    )
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    model = _prefer_rtl(model).transform(SpecializeLayers(part))
    for t in (GiveUniqueNodeNamesRecursive(), InferShapes(), InferDataTypes()):
        model = model.transform(t)
    return model


def set_folding(model, target_cycles_per_frame: int):
    """PE/SIMD so that each layer takes at most target_cycles_per_frame (FINN's SetFolding).

    FINN's warnings from inside its passes (e.g. "did not reach the target" before its second
    pass reaches it) are held back; the nodes still over the target at the end are logged.
    """
    from finn.transformation.fpgadataflow.set_folding import SetFolding
    from finn.transformation.qonnx.give_unique_node_names_recursive import (
        GiveUniqueNodeNamesRecursive,
    )
    from qonnx.custom_op.registry import getCustomOp

    target = max(1, int(target_cycles_per_frame))
    finn_log = logging.getLogger("finn_logger")
    level = finn_log.level
    finn_log.setLevel(logging.ERROR)
    try:
        model = model.transform(SetFolding(target))
    finally:
        finn_log.setLevel(level)
    for node in model.get_nodes_by_op_type("Reshape_rtl"):
        # SetFolding picks a PE dividing the output's last axis only; Reshape's PE must divide
        # the input's last axis as well (e.g. a 1x1x28x28 -> 1x784 flatten: PE | 28, not 784)
        inst = getCustomOp(node)
        common = math.gcd(model.get_tensor_shape(node.input[0])[-1],
                          model.get_tensor_shape(node.output[0])[-1])
        pe = int(inst.get_nodeattr("PE"))  # the smallest valid PE at least as fast as FINN's
        inst.set_nodeattr("PE", next(d for d in range(min(pe, common), common + 1)
                                     if common % d == 0))
    for node in model.get_nodes_by_op_type("MVAU_rtl"):
        _refold_mvau(model, node)
    for node in model.graph.node:
        cycles = int(getCustomOp(node).get_exp_cycles())
        if cycles > target:
            log.warning("%s (%s): %d cycles/frame after folding, over the target of %d; it "
                        "limits the frame rate", node.name, node.op_type, cycles, target)
    return model.transform(GiveUniqueNodeNamesRecursive())


def _refold_mvau(model, node) -> None:
    """Re-pick an RTL MVAU's SIMD/PE (never slower than FINN's choice) for two RTL constraints.

    - MW/SIMD >= 2: finn-rtllib's mvu_vvu_axi with SIMD == MW overflows its output queue under
      backpressure ("Overflowing output queue" assertion in our Verilator runs), losing outputs.
    - SIMD a multiple or divisor of the producing sliding window's SIMD: otherwise the width
      converter between them has a non-integer ratio, and finn-rtllib's converter then takes
      about two cycles per word, halving the throughput that FINN's estimate (which gives
      converters no cycles) promises. Measured on digits: 1247 vs 686 cycles/frame.
    """
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    producer = model.find_producer(node.input[0])
    in_simd = None
    if producer is not None and producer.op_type.startswith("ConvolutionInputGenerator"):
        in_simd = int(getCustomOp(producer).get_nodeattr("SIMD"))
    simd, pe = mvau_folding(
        int(inst.get_nodeattr("MW")), int(inst.get_nodeattr("MH")),
        int(np.prod(inst.get_nodeattr("numInputVectors"))), int(inst.get_exp_cycles()), in_simd,
    )
    inst.set_nodeattr("SIMD", simd)
    inst.set_nodeattr("PE", pe)


def mvau_folding(mw: int, mh: int, vectors: int, max_cycles: int,
                 in_simd: int | None = None) -> tuple[int, int]:
    """(SIMD, PE) with the fewest lanes SIMD*PE taking at most max_cycles per frame.

    SIMD | MW with MW/SIMD >= 2 (when MW >= 2), PE | MH, and SIMD a multiple or divisor of
    in_simd when given. Cycles per frame are FINN's (MW/SIMD)*(MH/PE)*vectors. If no folding
    is fast enough, the fastest allowed one.
    """
    def divisors(n: int) -> list[int]:
        return [d for d in range(1, n + 1) if n % d == 0]

    simds = [s for s in divisors(mw) if (mw < 2 or mw // s >= 2)
             and (in_simd is None or s % in_simd == 0 or in_simd % s == 0)]
    options = [(s, p) for s in simds for p in divisors(mh)]

    def cycles(o: tuple[int, int]) -> int:
        return (mw // o[0]) * (mh // o[1]) * vectors

    fast = [o for o in options if cycles(o) <= max_cycles]
    if fast:
        return min(fast, key=lambda o: (o[0] * o[1], cycles(o), o[0]))
    return min(options, key=lambda o: (cycles(o), o[0] * o[1]))


def insert_dwc_fifo(model, part: str, fifo_depth: int = DEFAULT_FIFO_DEPTH):
    """Width converters, and FIFOs of `fifo_depth` words between all layers.

    FINN sizes FIFOs by simulation in Vivado; without it every FIFO gets one fixed depth. FINN's
    shallow 2-word FIFOs let bursty producers (sliding windows) stall their neighbours: on
    digits the RTL ran 11 % slower than FINN's estimate with depth 2, 2 % faster with 32.
    """
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.general import GiveReadableTensorNames

    model = model.transform(InsertDWC())
    model = model.transform(InsertFIFO(create_shallow_fifos=True))
    for node in model.get_nodes_by_op_type("StreamingFIFO"):
        inst = getCustomOp(node)
        inst.set_nodeattr("depth", max(int(inst.get_nodeattr("depth")), fifo_depth))
    model = specialize_layers(model, part)
    return model.transform(GiveReadableTensorNames())


def annotate_cycles(model):
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles

    return model.transform(AnnotateCycles())


# ----------------------------------------------------------------------------- estimates


def layer_rows(model, part: str) -> list[LayerRow]:
    """Per-layer FINN estimates (resources, cycles, folding) of a specialised dataflow model."""
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    from finn.analysis.fpgadataflow.res_estimation import res_estimation
    from qonnx.custom_op.registry import getCustomOp

    res = model.analysis(lambda m: res_estimation(m, part))
    cycles = model.analysis(exp_cycles_per_layer)
    rows = []
    for node in model.graph.node:
        if node.name not in res:
            continue
        inst = getCustomOp(node)
        attrs = inst.get_nodeattr_types()
        r = {FINN_TO_RES[k]: float(v) for k, v in res[node.name].items() if k in FINN_TO_RES}
        rows.append(LayerRow(
            name=node.name,
            op_type=node.op_type,
            impl_style="rtl" if node.op_type.endswith("_rtl") else "hls",
            pe=int(inst.get_nodeattr("PE")) if "PE" in attrs else None,
            simd=int(inst.get_nodeattr("SIMD")) if "SIMD" in attrs else None,
            lut=r.get("LUT", 0.0), bram18=r.get("BRAM18", 0.0),
            uram=r.get("URAM", 0.0), dsp=r.get("DSP", 0.0),
            cycles=int(cycles[node.name]),
        ))
    return rows


def _predecessors(model) -> dict[str, list[str]]:
    return {
        n.name: [p.name for p in (model.find_direct_predecessors(n) or [])]
        for n in model.graph.node
    }


# ----------------------------------------------------------------------------- verification


def random_input_batch(model, frames: int = 4, seed: int = 0) -> np.ndarray:
    """Integers drawn over the whole range of the model input's datatype."""
    inp = model.graph.input[0].name
    dt = model.get_tensor_datatype(inp)
    shape = [frames, *model.get_tensor_shape(inp)[1:]]
    rng = np.random.default_rng(seed)
    return rng.integers(int(dt.min()), int(dt.max()) + 1, size=shape).astype(np.float32)


def verify_hw_model(qonnx_model, hw_model, batch: np.ndarray, tolerance: float = 0.05) -> dict:
    """Execute the QONNX model and the (unspecialised) HW-layer model on `batch`, frame by frame.

    Raises VerificationError when max |qonnx - hw| > tolerance * max |qonnx|. Streamlining turns
    float quantizers into float32 thresholds, so an accumulator within rounding of a quantization
    boundary can flip one activation step (seen with 8-bit activations: ~3e-3 of the output range
    on 1 of 4 random frames); a wrong conversion disagrees by the order of the output range.
    """
    import torch

    from flow.export import qonnx_outputs

    x = torch.from_numpy(np.asarray(batch, dtype=np.float32))
    ref = qonnx_outputs(qonnx_model, x)
    got = qonnx_outputs(hw_model, x).reshape(ref.shape)
    diff = np.abs(ref - got)
    err = float(diff.max())
    scale = float(np.abs(ref).max()) or 1.0
    result = {
        "frames": len(batch),
        "max_abs_error": err,
        "max_rel_error": err / scale,
        "mismatched_outputs": float(np.mean(diff > 1e-6 * scale)),
        "argmax_agreement": float(np.mean(ref.reshape(len(x), -1).argmax(1)
                                          == got.reshape(len(x), -1).argmax(1))),
        "tolerance": tolerance,
    }
    if err > tolerance * scale:
        raise VerificationError(
            f"FINN HW-layer model differs from the QONNX model: max abs error {err:.3g} > "
            f"{tolerance * scale:.3g} ({tolerance:g} of the output range) on {len(batch)} frames"
        )
    return result


# ----------------------------------------------------------------------------- entry points


def _run(stage: str, fn: Stage, model, source: str):
    try:
        return fn(model)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"{source}: FINN stage {stage!r} failed: {type(e).__name__}: {e}") from e


def build_dataflow(
    model,
    board: Board | str,
    target_fps: float,
    work_dir: Path | str,
    input_dtype: str | None = None,
    clock_mhz: float | None = None,
    verify_frames: int = 4,
    verify_tolerance: float = 0.05,
    source: str = "model",
    fifo_depth: int = DEFAULT_FIFO_DEPTH,
) -> FinnEstimate:
    """Run the FINN dataflow stages on a QONNX ModelWrapper (not modified) and estimate it.

    Saves each stage's ONNX file in `work_dir` and `estimate.json`; `verify_frames=0` skips the
    QONNX vs HW-layer python comparison.
    """
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    board = get_board(board)
    if not target_fps > 0:
        raise ModelError(f"target_fps must be positive, got {target_fps}")
    if not 2 <= fifo_depth <= 65536:
        raise ModelError(f"fifo_depth must be 2..65536 words, got {fifo_depth}")
    clock = float(clock_mhz or board.clock_mhz)
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    _init_finn(work)
    paths: dict[str, str] = {}

    def save(m, key: str, fname: str):
        paths[key] = str(work / fname)
        m.save(paths[key])
        return m

    qonnx_model = prepare_qonnx(ModelWrapper(copy.deepcopy(model.model)), input_dtype, source)
    save(qonnx_model, "qonnx", "00_qonnx.onnx")
    m = qonnx_model
    for i, (stage, fn) in enumerate(
        [("qonnx_to_finn", qonnx_to_finn), ("tidy_up", tidy_up), ("streamline", streamline),
         ("convert_to_hw", convert_to_hw), ("minimize_bit_width", minimize_bit_width)], start=1
    ):
        m = save(_run(stage, fn, m, source), stage, f"{i:02d}_{stage}.onnx")
    paths["hw_python"] = paths["minimize_bit_width"]
    outside = check_hw_coverage(m, source)

    verification = None
    if verify_frames > 0:
        batch = random_input_batch(qonnx_model, verify_frames)
        verification = verify_hw_model(qonnx_model, m, batch, verify_tolerance)

    parent, child = create_dataflow_partition(m, work / "partition")
    save(child, "dataflow_python", "06_dataflow_python.onnx")
    part = board.part
    target_cycles = int(clock * 1e6 / target_fps)
    for i, (stage, fn) in enumerate(
        [("specialize_layers", lambda x: specialize_layers(x, part)),
         ("set_folding", lambda x: set_folding(x, target_cycles)),
         ("minimize_bit_width_folded", minimize_bit_width),
         ("insert_dwc_fifo", lambda x: insert_dwc_fifo(x, part, fifo_depth)),
         ("annotate_cycles", annotate_cycles)], start=7
    ):
        child = save(_run(stage, fn, child, source), stage, f"{i:02d}_{stage}.onnx")
    paths["dataflow_rtl"] = paths["annotate_cycles"]
    getCustomOp(parent.get_nodes_by_op_type("StreamingDataflowPartition")[0]).set_nodeattr(
        "model", paths["dataflow_rtl"]
    )
    save(parent, "dataflow_parent", "dataflow_parent.onnx")

    from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance

    rows = layer_rows(child, part)
    used = Resources.total(Resources(lut=r.lut, bram18=r.bram18, uram=r.uram, dsp=r.dsp)
                           for r in rows)
    totals = {"LUT": used.lut, "BRAM18": used.bram18, "URAM": used.uram, "DSP": used.dsp}
    perf = pipeline_performance({r.name: r.cycles for r in rows}, clock, _predecessors(child))
    fit_report = fit(used, board, ResourceSource.FINN_ESTIMATE)
    notes = []
    if not fit_report.fits:
        notes.append(f"does not fit {board.name}: too many {', '.join(fit_report.over)}")
    if perf.steady_state_cycles > target_cycles:
        notes.append(
            f"target {target_fps:g} fps not reached: slowest layer {perf.bottleneck} needs "
            f"{perf.steady_state_cycles} cycles > {target_cycles} per frame"
        )
    result = FinnEstimate(
        board=board.name, part=part, clock_mhz=clock, target_fps=float(target_fps),
        target_cycles_per_frame=target_cycles,
        input_dtype=qonnx_model.get_tensor_datatype(qonnx_model.graph.input[0].name).name,
        layers=rows, totals=totals, fit=fit_report.model_dump(mode="json") | {"fits": fit_report.fits, "over": fit_report.over, "resources": {r.resource: r.model_dump() for r in fit_report.rows}}, performance=perf.to_dict(),
        finn_performance=dict(child.analysis(dataflow_performance)),
        hls_nodes=[r.name for r in rows if r.impl_style == "hls"],
        outside_partition=outside, paths=paths, verification=verification, notes=notes,
    )
    result.save_json(work / "estimate.json")
    for note in notes:
        log.warning(note)
    return result


def estimate_qonnx(
    onnx_path: Path | str,
    board: Board | str,
    target_fps: float,
    work_dir: Path | str,
    input_dtype: str | None = None,
    **kwargs,
) -> FinnEstimate:
    """Estimate any QONNX file on `board` at `target_fps` (the CLI's `densiflow estimate`)."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper

    path = Path(onnx_path)
    if not path.is_file():
        raise ModelError(f"ONNX file not found: {path}")
    try:
        model = ModelWrapper(onnx.load(str(path)))
    except Exception as e:
        raise ModelError(f"{path} is not a readable ONNX file: {type(e).__name__}: {e}") from e
    return build_dataflow(model, board, target_fps, work_dir, input_dtype,
                          source=str(path), **kwargs)
