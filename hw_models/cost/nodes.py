"""FINN nodes -> cost-model layers: each specialised FINN HW node read into its typed layer."""
from __future__ import annotations

from collections.abc import Callable

from hw_models.cost.layers import (
    AddStreamsLayer,
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


def dsp_type_of_part(part: str) -> DspType:
    """DSP block of an AMD part, as FINN decides it (Versal: DSP58; xc7: DSP48E1)."""
    p = part.lower()
    if p.startswith(("xcv", "xqv")) and not p.startswith("xcvu"):
        return "DSP58"
    return "DSP48E1" if p[2:3] == "7" else "DSP48E2"


def _bits(inst, attr: str) -> int:
    from qonnx.core.datatype import DataType

    return DataType[inst.get_nodeattr(attr)].bitwidth()


def _signed(inst, attr: str) -> bool:
    from qonnx.core.datatype import DataType

    return DataType[inst.get_nodeattr(attr)].signed()


def _impl(op_type: str) -> Impl:
    return "hls" if op_type.endswith("_hls") else "rtl"


def _mvau_layer(node, inst, part: str) -> MvauLayer:
    import numpy as np

    g = inst.get_nodeattr
    return MvauLayer(
        name=node.name, impl=_impl(node.op_type), mw=g("MW"), mh=g("MH"), simd=g("SIMD"),
        pe=g("PE"), vectors=int(np.prod(g("numInputVectors"))),
        weight_bits=_bits(inst, "weightDataType"), input_bits=_bits(inst, "inputDataType"),
        input_signed=_signed(inst, "inputDataType"), output_bits=_bits(inst, "outputDataType"),
        acc_bits=_bits(inst, "accDataType"), no_activation=bool(g("noActivation")),
        mem_mode=g("mem_mode"), ram_style=g("ram_style"),
        ram_style_thresholds=g("ram_style_thresholds"),
        res_type=g("resType") if g("resType") in ("lut", "dsp") else "lut",
        dsp_type=dsp_type_of_part(part))


def _vvau_layer(node, inst, part: str) -> VvauLayer:
    g = inst.get_nodeattr
    return VvauLayer(
        name=node.name, impl=_impl(node.op_type), channels=g("Channels"),
        kernel=tuple(g("Kernel")), dim=tuple(g("Dim")), simd=g("SIMD"), pe=g("PE"),
        weight_bits=_bits(inst, "weightDataType"), input_bits=_bits(inst, "inputDataType"),
        input_signed=_signed(inst, "inputDataType"), output_bits=_bits(inst, "outputDataType"),
        acc_bits=_bits(inst, "accDataType"), no_activation=bool(g("noActivation")),
        mem_mode=g("mem_mode"), ram_style=g("ram_style"), res_type=g("resType"),
        dsp_type=dsp_type_of_part(part))


def _vectors(inst) -> int:
    import numpy as np

    return int(np.prod(inst.get_nodeattr("numInputVectors")))


def _global_acc_pool_layer(node, inst, part: str) -> GlobalAccPoolLayer:
    g = inst.get_nodeattr
    return GlobalAccPoolLayer(
        name=node.name, impl=_impl(node.op_type), channels=g("NumChannels"), pe=g("PE"),
        vectors=_vectors(inst), input_bits=inst.get_input_datatype(0).bitwidth(),
        output_bits=inst.get_output_datatype(0).bitwidth())


def _duplicate_streams_layer(node, inst, part: str) -> DuplicateStreamsLayer:
    g = inst.get_nodeattr
    return DuplicateStreamsLayer(
        name=node.name, impl=_impl(node.op_type), channels=g("NumChannels"), pe=g("PE"),
        vectors=_vectors(inst), outputs=g("NumOutputStreams"),
        input_bits=inst.get_input_datatype(0).bitwidth())


def _add_streams_layer(node, inst, part: str) -> AddStreamsLayer:
    g = inst.get_nodeattr
    return AddStreamsLayer(
        name=node.name, impl=_impl(node.op_type), channels=g("NumChannels"), pe=g("PE"),
        vectors=_vectors(inst),
        input_bits=(inst.get_input_datatype(0).bitwidth(), inst.get_input_datatype(1).bitwidth()),
        output_bits=inst.get_output_datatype(0).bitwidth())


def _thresholding_layer(node, inst, part: str) -> ThresholdingLayer:
    import numpy as np

    g = inst.get_nodeattr
    attrs = inst.get_nodeattr_types()
    return ThresholdingLayer(
        name=node.name, impl=_impl(node.op_type), channels=g("NumChannels"), pe=g("PE"),
        vectors=int(np.prod(g("numInputVectors"))), input_bits=_bits(inst, "inputDataType"),
        threshold_bits=_bits(inst, "weightDataType"), output_bits=_bits(inst, "outputDataType"),
        num_steps=g("numSteps"),
        ram_style=g("ram_style") if "ram_style" in attrs else "distributed")


def _swg_layer(node, inst, part: str) -> SlidingWindowLayer:
    g = inst.get_nodeattr
    return SlidingWindowLayer(
        name=node.name, impl=_impl(node.op_type), channels=g("IFMChannels"),
        ifm_dim=tuple(g("IFMDim")), ofm_dim=tuple(g("OFMDim")), kernel=tuple(g("ConvKernelDim")),
        stride=tuple(g("Stride")), dilation=tuple(g("Dilation")), simd=g("SIMD"),
        parallel_window=bool(g("parallel_window")), depthwise=bool(g("depthwise")),
        input_bits=_bits(inst, "inputDataType"), ram_style=g("ram_style"))


def _padding_layer(node, inst, part: str) -> PaddingLayer:
    g = inst.get_nodeattr
    return PaddingLayer(name=node.name, impl=_impl(node.op_type), channels=g("NumChannels"),
                        img_dim=tuple(g("ImgDim")), padding=tuple(g("Padding")), simd=g("SIMD"),
                        input_bits=_bits(inst, "inputDataType"), batch=g("numInputVectors"))


def _dwc_layer(node, inst, part: str) -> WidthConverterLayer:
    return WidthConverterLayer(name=node.name, impl=_impl(node.op_type),
                               in_width=inst.get_instream_width(),
                               out_width=inst.get_outstream_width())


def _fifo_layer(node, inst, part: str) -> FifoLayer:
    return FifoLayer(name=node.name, impl=_impl(node.op_type), depth=inst.get_nodeattr("depth"),
                     width=inst.get_instream_width_padded(),
                     ram_style=inst.get_nodeattr("ram_style"))


def _pool_layer(node, inst, part: str) -> PoolLayer:
    import numpy as np

    g = inst.get_nodeattr
    return PoolLayer(name=node.name, impl=_impl(node.op_type), channels=g("Channels"), pe=g("PE"),
                     kernel=int(np.prod(g("KernelSize"))), out_pixels=int(np.prod(g("OutImgDims"))),
                     batch=g("BatchSize"), input_bits=_bits(inst, "InputDataType"),
                     output_bits=_bits(inst, "OutputDataType"), function=g("Function"),
                     acc_bits=inst.accumulator_bits() if hasattr(inst, "accumulator_bits")
                     else None)


def _labelselect_layer(node, inst, part: str) -> LabelSelectLayer:
    g = inst.get_nodeattr
    return LabelSelectLayer(name=node.name, impl=_impl(node.op_type), labels=g("Labels"),
                            pe=g("PE"), input_bits=_bits(inst, "inputDataType"))


_READERS: dict[str, Callable] = {
    "MVAU": _mvau_layer, "VVAU": _vvau_layer, "Thresholding": _thresholding_layer,
    "ConvolutionInputGenerator": _swg_layer, "FMPadding": _padding_layer,
    "StreamingDataWidthConverter": _dwc_layer, "StreamingFIFO": _fifo_layer,
    "Pool": _pool_layer, "LabelSelect": _labelselect_layer,
    "GlobalAccPool": _global_acc_pool_layer, "DuplicateStreams": _duplicate_streams_layer,
    "AddStreams": _add_streams_layer,
}


def is_specialised_hw_node(node) -> bool:
    """Is this ONNX node a specialised FINN HW layer (an RTL or HLS variant)?"""
    return node.domain.startswith("finn.custom_op.fpgadataflow.") and node.op_type.endswith(
        ("_rtl", "_hls"))


def layer_from_node(node, part: str) -> Layer:
    """The cost model's description of one specialised FINN HW node."""
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    base = node.op_type.rsplit("_", 1)[0]
    reader = _READERS.get(base)
    if reader is None:
        return OtherLayer(name=node.name, impl=_impl(node.op_type), op_type=node.op_type,
                          cycles=int(inst.get_exp_cycles()))
    return reader(node, inst, part)


def model_layers(model, part: str, from_geometry: bool = False) -> list[Layer]:
    """Cost-model descriptions of every specialised HW node of a FINN dataflow model, in order.

    `from_geometry=True` drops what FINN derived from the weight and threshold values (narrowed
    accumulator and threshold widths), as a screen without a FINN build would know the layer.
    """
    layers = [layer_from_node(n, part) for n in model.graph.node if is_specialised_hw_node(n)]
    return [geometry_only(x) for x in layers] if from_geometry else layers
