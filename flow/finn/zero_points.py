"""Asymmetric activation quantizers for FINN: a Quant node's zero point moved into Adds.

FINN's ConvertQONNXtoFINN refuses a nonzero zero point. An unsigned activation
Quant(h; s, z) equals Add(-s·z) ∘ Quant(h + s·z; s, 0) exactly, and FINN's streamlining folds
both Adds into the thresholds, so asymmetric (moving-average) quantizers build and simulate
bit-exactly. Pure QONNX; prepare_qonnx applies it to every model FINN builds.
"""
from __future__ import annotations

from qonnx.transformation.base import Transformation

from flow.core.errors import ModelError


def _extract_zero_points(model) -> bool:
    """Rewrite every activation Quant node with a nonzero zeropt (see the module doc)."""
    from onnx import helper
    from qonnx.util.basic import get_by_name

    changed = False
    for node in list(model.graph.node):
        if node.op_type != "Quant" or model.get_initializer(node.input[0]) is not None:
            continue
        zero_point = model.get_initializer(node.input[2])
        if zero_point is None or not zero_point.any():
            continue
        scale = model.get_initializer(node.input[1])
        shift = (scale * zero_point).astype("float32")  # s·z
        signed = get_by_name(node.attribute, "signed").i
        if signed:
            raise ModelError(f"Quant node {node.name}: a signed quantizer with a zero point is "
                             "not supported by FINN's conversion")
        shifted, quantized = model.make_new_valueinfo_name(), model.make_new_valueinfo_name()
        plus, minus = model.make_new_valueinfo_name(), model.make_new_valueinfo_name()
        model.set_initializer(plus, shift)
        model.set_initializer(minus, -shift)
        model.set_initializer(node.input[2], zero_point * 0)
        output = node.output[0]
        index = list(model.graph.node).index(node)
        model.graph.node.insert(index, helper.make_node("Add", [node.input[0], plus], [shifted]))
        node.input[0], node.output[0] = shifted, quantized
        model.graph.node.insert(index + 2, helper.make_node("Add", [quantized, minus], [output]))
        changed = True
    return changed


class ExtractZeroPoints(Transformation):
    """QONNX transformation: activation Quant(h; s, z) -> Add(-s·z) ∘ Quant(h + s·z; s, 0)."""

    def apply(self, model):
        from qonnx.transformation.infer_shapes import InferShapes

        changed = _extract_zero_points(model)
        return (model.transform(InferShapes()) if changed else model), False
