"""Conversion of ONNX nodes to densiflow's HW custom ops (run before FINN's own convert_to_hw)."""

from __future__ import annotations

from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes


def _integer(model: ModelWrapper, tensor: str) -> bool:
    dt = model.get_tensor_datatype(tensor)
    return dt.is_integer() and dt.get_canonical_name() != "BIPOLAR"


def _channels_last(model: ModelWrapper, tensor: str) -> bool:
    layout = model.get_tensor_layout(tensor)
    return layout is None or layout[-1] == "C"


def is_stream_add(model: ModelWrapper, node) -> bool:
    """An `Add` of two dynamic integer tensors of one shape, channels last (NHWC or NC)."""
    if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
        return False
    a, b = node.input
    if model.get_initializer(a) is not None or model.get_initializer(b) is not None:
        return False
    shape = model.get_tensor_shape(a)
    return (
        shape is not None
        and len(shape) >= 2
        and shape == model.get_tensor_shape(b)
        and all(_integer(model, t) and _channels_last(model, t) for t in (a, b))
    )


class InferAddStreamsLayer(Transformation):
    """Replace every integer stream add (see `is_stream_add`) by an AddStreams node (PE=1)."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        graph = model.graph
        changed = False
        for index, node in enumerate(graph.node):
            if not is_stream_add(model, node):
                continue
            shape = model.get_tensor_shape(node.input[0])
            dtypes = [model.get_tensor_datatype(t).get_canonical_name() for t in node.input]
            new = helper.make_node(
                "AddStreams",
                list(node.input),
                list(node.output),
                domain="finn.custom_op.fpgadataflow",
                backend="fpgadataflow",
                NumChannels=int(shape[-1]),
                PE=1,
                inputDataTypes=dtypes,
                numInputVectors=[int(x) for x in shape[:-1]],
                inFIFODepths=[2, 2],
                name="AddStreams_" + node.name,
            )
            graph.node.insert(index, new)
            graph.node.remove(node)
            changed = True
        if changed:
            model = model.transform(InferShapes())
            model = model.transform(InferDataTypes())
        return model, changed
