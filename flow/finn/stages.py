"""The model -> model stages of a FINN dataflow build, in the order FINN's builder runs them.

Each stage mirrors a step body of FINN's `finn/builder/build_dataflow_steps.py` (never imported:
it needs Vivado at import time). FINN and QONNX are imported inside each stage, so importing this
module is cheap. Every stage needs `flow.finn.settings.finn_settings` around it.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path

from flow.core.errors import ModelError
from flow.finn.errors import InputDtypeError
from hw_models.folding import prefer_rtl_for_unspecialised
from hw_models.rules import DEFAULT_FIFO_DEPTH, MAX_BITS, MAX_INPUT_BITS

log = logging.getLogger(__name__)

QONNX_QUANT_OPS = ("Quant", "BipolarQuant", "BinaryQuant", "Trunc")
ELTWISE_OPS = ("Mul", "Div", "Sub", "Add", "And", "Or", "Xor", "Equal", "Less", "LessOrEqual",
               "Greater", "GreaterOrEqual")


def _input_datatype(name: str, tensor: str, source: str):
    """The QONNX integer datatype called `name`, allowed as the accelerator's input."""
    from qonnx.core.datatype import DataType

    try:
        dt = DataType[name.upper()]
    except (KeyError, ValueError, AttributeError):
        raise InputDtypeError(source, tensor, f"cannot take {name!r}: it is not a QONNX "
                              "datatype") from None
    if not dt.is_integer() or not 1 <= dt.bitwidth() <= MAX_INPUT_BITS:
        raise InputDtypeError(source, tensor, f"cannot take {name!r}: it must be an integer "
                              f"datatype of 1 to {MAX_INPUT_BITS} bits")
    return dt


def _dynamic(dim) -> bool:
    """Is an ONNX tensor dimension left open (a dim_param such as "batch", or 0 / -1)?"""
    return bool(dim.dim_param) or dim.dim_value <= 0


def fix_batch_size(model, source: str = "model"):
    """The model with an open batch dimension of its inputs and outputs set to 1 (FINN needs
    fixed shapes and streams one frame at a time); ModelError naming the tensor if any other
    dimension is open."""
    consts = {t.name for t in model.graph.initializer}
    fixed = []
    for kind, vis in (("input", model.graph.input), ("output", model.graph.output)):
        for vi in vis:
            dims = vi.type.tensor_type.shape.dim
            if vi.name in consts or not any(_dynamic(d) for d in dims):
                continue
            if any(_dynamic(d) for d in dims[1:]):
                shape = [d.dim_param or d.dim_value for d in dims]
                raise ModelError(f"{source}: {kind} {vi.name} has the open shape {shape}; only "
                                 "the batch (first) dimension may be open: export the model "
                                 "with a fixed input shape")
            fixed.append(f"{kind} {vi.name} ({dims[0].dim_param or dims[0].dim_value})")
            dims[0].Clear()
            dims[0].dim_value = 1
    if fixed:
        log.info("%s: open batch dimension of %s set to 1 (FINN needs a fixed shape)", source,
                 ", ".join(fixed))
    return model


def prepare_qonnx(model, input_dtype: str | None = None, source: str = "model"):
    """Clean up a QONNX model and annotate its input's integer datatype (needed by FINN)."""
    from qonnx.util.cleanup import cleanup_model

    from flow.finn.rewrites import TagOrigins
    from flow.finn.zero_points import ExtractZeroPoints

    ops = {n.op_type for n in model.graph.node}
    if not ops & {*QONNX_QUANT_OPS, "MultiThreshold"}:
        raise ModelError(
            f"{source} has no QONNX quantization nodes ({', '.join(QONNX_QUANT_OPS)}): it is not "
            "a QONNX model. Export a Brevitas network with brevitas.export.export_qonnx."
        )
    name = model.graph.input[0].name  # as in the user's file (clean-up renames it)
    model = fix_batch_size(model, source).transform(TagOrigins())
    try:
        model = cleanup_model(model)
    except Exception as e:
        raise ModelError(f"{source}: QONNX clean-up failed: {type(e).__name__}: {e}") from e
    model = model.transform(ExtractZeroPoints())
    inp = model.graph.input[0].name
    if input_dtype is not None:
        model.set_tensor_datatype(inp, _input_datatype(input_dtype, name, source))
    dt = model.get_tensor_datatype(inp)
    if not dt.is_integer():
        raise InputDtypeError(source, name, f"has no integer datatype annotation (it is "
                              f"{dt.name}); FINN needs one")
    return model


def qonnx_to_finn(model):
    """QONNX Quant nodes -> FINN-ONNX (MultiThreshold activations, integer weights)."""
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
    from finn.transformation.qonnx.quant_act_to_multithreshold import (
        default_filter_function_generator,
    )

    from flow.finn.rewrites import Traced

    flt = default_filter_function_generator(max_multithreshold_bit_width=MAX_BITS)
    return model.transform(Traced(ConvertQONNXtoFINN(filter_function=flt)))


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


def _graph_key(model) -> bytes:
    return model.graph.SerializeToString(deterministic=True)


def _to_fixpoint(model, passes, rounds: int = 8):
    """Apply `passes` in order, again and again until the graph stops changing."""
    for _ in range(rounds):
        before = _graph_key(model)
        for t in passes:
            model = model.transform(t)
        if _graph_key(model) == before:
            break
    return model


def _graph_passes():
    """FINN's Streamline plus what residual, pooled and leaky graphs need (finn-examples'
    ResNet-50 custom steps: scales past forks and joins, then the linear set again)."""
    from finn.transformation.fpgadataflow.convert_to_hw.global_acc_pool import (
        InferGlobalAccPoolLayer,
    )
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.reorder import MoveLinearPastEltwiseAdd, MoveMulPastFork

    from flow.finn import rewrites

    return tuple(rewrites.Traced(t) for t in (
        rewrites.AbsorbMonotonicIntoMultiThreshold(), Streamline(), MoveMulPastFork(),
        MoveLinearPastEltwiseAdd(), rewrites.MoveScalarMulPastAveragePool(),
        rewrites.AveragePoolToSumPool(), InferGlobalAccPoolLayer()))


def _layout_passes():
    """Transposes left by lowering convs moved through forks, joins and thresholds until they
    cancel (leftover Transposes make CreateDataflowPartition fail: "partition depends on
    itself")."""
    from finn.transformation.streamline import absorb, reorder
    from finn.transformation.streamline.remove import RemoveIdentityTranspose

    from flow.finn.rewrites import Traced

    return tuple(Traced(t) for t in (
        reorder.MakeMaxPoolNHWC(), absorb.AbsorbTransposeIntoMultiThreshold(),
        reorder.MoveTransposePastFork(), reorder.MoveTransposePastJoinAdd(),
        absorb.AbsorbConsecutiveTransposes(), RemoveIdentityTranspose()))


def streamline(model):
    """Move and absorb float scales/biases into thresholds; lower convs (FINN's step_streamline,
    with the graph passes of `_graph_passes` and `_layout_passes` run to a fixpoint)."""
    from finn.transformation.streamline import absorb
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from qonnx.transformation.bipolar_to_xnor import ConvertBipolarMatMulToXnorPopcount
    from qonnx.transformation.general import RemoveUnusedTensors
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul

    from flow.finn.rewrites import AbsorbMonotonicIntoMultiThreshold, InheritOrigins, Traced

    model = model.transform(AbsorbMonotonicIntoMultiThreshold())
    model = model.transform(absorb.AbsorbScalarBiasIntoMultiThreshold())
    model = _to_fixpoint(model, _graph_passes())
    if model.get_nodes_by_op_type("Conv"):
        model = model.transform(Traced(LowerConvsToMatMul()))
        model = _to_fixpoint(model, _layout_passes())
    model = model.transform(ConvertBipolarMatMulToXnorPopcount())
    model = _to_fixpoint(model, _graph_passes() + _layout_passes())
    # thresholds below an unsigned input's range (a signed quantizer of a ReLU output) clipped
    for t in (RoundAndClipThresholds(), absorb.AbsorbScalarMulAddIntoTopK(), InferDataLayouts(),
              RemoveUnusedTensors(), InheritOrigins()):
        model = model.transform(t)
    return model


def _integer_op(model, node) -> bool:
    """Does an elementwise op compute integers from integers (a HW layer)? Float ones, i.e. the
    de-quantising Mul/Add at the output (e.g. Brevitas' TensorNorm) or a scale streamlining
    could not absorb, stay ONNX nodes: at the output the host runs them, between HW layers
    `check_hw_coverage` names them (float HW layers exist only as HLS)."""
    consts = {t.name for t in model.graph.initializer}
    tensors = [t for t in node.input if t and t not in consts] + list(node.output)
    return all(model.get_tensor_datatype(t).is_integer() for t in tensors)


_HW = "finn.transformation.fpgadataflow.convert_to_hw."
_REQUANT = _HW + "requant.InferRequantLayer"
_THRESHOLDING = _HW + "thresholding.InferThresholdingLayer"
# (trigger op types, transformation) in the order of FINN's step_convert_to_hw; () = always
HW_CONVERSIONS: tuple[tuple[tuple[str, ...], str], ...] = (
    # standalone thresholds: activations over MAX_BITS -> Requant, the rest -> Thresholding
    (("MultiThreshold", "Quant"), _REQUANT),
    (("MultiThreshold",), _THRESHOLDING),
    (("XnorPopcountMatMul",),
     _HW + "binary_matrix_vector_activation.InferBinaryMatrixVectorActivation"),
    (("MatMul",), _HW + "quantized_matrix_vector_activation.InferQuantizedMatrixVectorActivation"),
    (("MatMul",), _HW + "vector_vector_activation.InferVectorVectorActivation"),
    (("TopK",), _HW + "label_select.InferLabelSelectLayer"),
    (("MultiThreshold", "Quant"), _REQUANT),
    (("MultiThreshold",), _THRESHOLDING),
    (("Pad",), _HW + "fm_padding.InferFMPadding"),
    (("MaxPool", "AveragePool", "MaxPoolNHWC", "QuantAvgPool2d"), _HW + "pool.InferPool"),
    (("ReduceMax", "ReduceSum", "ReduceMean"), _HW + "pool_from_reduce.InferPoolFromReduce"),
    (("Im2Col",), _HW + "conv_inp_gen.InferConvInpGen"),
    (("ConvolutionInputGenerator",), "finn.transformation.move_reshape.RemoveCNVtoFCFlatten"),
    (("Concat",), _HW + "pad1d.InferPad1DLayer"),
    (("Concat",), _HW + "concat.InferConcatLayer"),
    (("Split",), _HW + "split.InferSplitLayer"),
    (("Add",), "hw_models.finn_ops.infer.InferAddStreamsLayer"),  # integer residual adds
    (ELTWISE_OPS, _HW + "elementwise_binary_operation.InferElementwiseBinaryOperation"),
    (("Where",), _HW + "where.InferWhereLayer"),
    (("Relu",), _HW + "relu_as_elementwise_max.InferReLUAsElementwiseMax"),
    (("Upsample",), _HW + "upsample.InferUpsample"),
    (("GlobalAveragePool",), _HW + "global_acc_pool.InferGlobalAccPoolLayer"),
    (("Gather",), _HW + "select_token.InferSelectTokenLayer"),
    (("Gather",), _HW + "crop.InferCrop"),
    (("Gather",), _HW + "lookup.InferLookupLayer"),
    (("Softmax",), _HW + "hw_softmax.InferHWSoftmax"),
    (("PWPolyF", "Gelu", "Sigmoid", "Tanh", "Erf"), _HW + "pwpolyf.InferPWPolyFLayer"),
    (("LayerNormalization",), _HW + "layer_norm.InferLayerNorm"),
    (("Crop",), _HW + "crop.InferCrop"),
    ((), _HW + "duplicate_streams.InferDuplicateStreamsLayer"),  # graph forks
    (("Requant",),
     "finn.transformation.fpgadataflow.absorb_into_requant.AbsorbElementwiseOpsIntoRequant"),
)


def _conversion(path: str):
    """An instance of the FINN transformation at dotted `path` (imported now)."""
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    if path == _REQUANT:
        return cls(bitwidth_threshold=MAX_BITS + 1)
    if name == "InferElementwiseBinaryOperation":
        return cls(_integer_op)
    return cls()


def convert_to_hw(model):
    """Supported nodes -> FINN HW layers, standalone thresholds (FINN's step_convert_to_hw)."""
    from finn.transformation.fpgadataflow.convert_to_hw.reshape import InferReshape
    from finn.transformation.fpgadataflow.convert_to_hw.shuffle import InferShuffle
    from finn.transformation.move_reshape import RemoveCNVtoFCFlatten
    from finn.transformation.qonnx.give_unique_node_names_recursive import (
        GiveUniqueNodeNamesRecursive,
    )
    from finn.transformation.streamline import absorb
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    import hw_models.finn_ops  # noqa: F401  (registers densiflow's RTL ops in FINN)
    from flow.finn.rewrites import Traced

    for op_types, path in HW_CONVERSIONS:
        if not op_types or any(model.get_nodes_by_op_type(op) for op in op_types):
            model = model.transform(Traced(_conversion(path)))
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


def specialize_layers(model, part: str):
    """Pick the RTL variant of every HW layer where FINN has one for `part`, else HLS.

    A depthwise VVAU becomes VVAU_rtl on every part its widths fit (SpecializeVvauRtl: FINN
    allows it only on Versal, and VVAU_hls has no RTL without Vitis HLS).
    """
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from finn.transformation.qonnx.give_unique_node_names_recursive import (
        GiveUniqueNodeNamesRecursive,
    )
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    import hw_models.finn_ops  # noqa: F401  (registers densiflow's RTL ops in FINN)
    from hw_models.finn_ops.vvau import SpecializeVvauRtl

    model = prefer_rtl_for_unspecialised(model).transform(SpecializeVvauRtl(part))
    model = model.transform(SpecializeLayers(part))
    for t in (GiveUniqueNodeNamesRecursive(), InferShapes(), InferDataTypes()):
        model = model.transform(t)
    return model


def insert_dwc_fifo(model, part: str, fifo_depth: int = DEFAULT_FIFO_DEPTH):
    """Width converters, and FIFOs of at least `fifo_depth` words between all layers.

    FINN sizes FIFOs by simulation in Vivado; without it every FIFO gets one fixed depth. FINN's
    shallow 2-word FIFOs let bursty producers (sliding windows) stall their neighbours: on
    digits the RTL ran 11 % slower than FINN's estimate with depth 2, 2 % faster with 32.
    The skip FIFO of each residual block is then deepened to hold what its branch absorbs
    before the join (hw_models.rtlsim.residual), or the pipeline deadlocks.
    """
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.general import GiveReadableTensorNames

    from hw_models.rtlsim.residual import SizeSkipFifos

    model = model.transform(InsertDWC())
    model = model.transform(InsertFIFO(create_shallow_fifos=True))
    for node in model.get_nodes_by_op_type("StreamingFIFO"):
        inst = getCustomOp(node)
        inst.set_nodeattr("depth", max(int(inst.get_nodeattr("depth")), fifo_depth))
    model = specialize_layers(model, part).transform(SizeSkipFifos())
    return model.transform(GiveReadableTensorNames())


def annotate_cycles(model):
    """Each HW layer's expected cycles per frame as its `cycles_estimate` attribute."""
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles

    return model.transform(AnnotateCycles())
