"""Which nodes became FINN HW layers; a clear error naming the ones that did not."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from flow.core.errors import ModelError

SUPPORTED_OPS = (
    "quantized MatMul/Gemm/Conv (-> MVAU/VVAU), quantized activations MultiThreshold "
    "(-> Thresholding), Im2Col (-> ConvolutionInputGenerator), Pad (-> FMPadding), "
    "MaxPool/AveragePool (-> Pool, HLS only), GlobalAveragePool, TopK (-> LabelSelect), "
    "Concat, Split, elementwise Add/Mul/Sub on integers, Transpose (-> Shuffle)"
)
# ops that may stay in software before/after the accelerator (layout changes, output scaling)
SOFTWARE_EDGE_OPS = frozenset({
    "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Mul", "Div", "Add",
    "Sub", "TopK", "ArgMax", "Softmax",
})


class SoftwareNode(BaseModel):
    """A node left outside the accelerator, run by the host."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    op_type: str


def is_hw_node(node) -> bool:
    """Is this ONNX node one of FINN's HW layers (specialised or not)?"""
    return node.domain.startswith("finn.custom_op.fpgadataflow")


def _reaches_hw(node, step, hw: set[str]) -> bool:
    """Does walking `step` (predecessors or successors) from node reach a HW layer?"""
    seen, todo = set(), list(step(node) or [])
    while todo:
        n = todo.pop()
        if n.name in hw:
            return True
        if n.name not in seen:
            seen.add(n.name)
            todo.extend(step(n) or [])
    return False


def nodes_outside_hw(model) -> tuple[list, list]:
    """Non-HW nodes split into (between HW layers: blocking, at the start/end: software)."""
    hw = {n.name for n in model.graph.node if is_hw_node(n)}
    between, edge = [], []
    for n in model.graph.node:
        if n.name in hw:
            continue
        inside = (_reaches_hw(n, model.find_direct_predecessors, hw)
                  and _reaches_hw(n, model.find_direct_successors, hw))
        (between if inside else edge).append(n)
    return between, edge


def check_hw_coverage(model, source: str = "model") -> list[SoftwareNode]:
    """Raise ModelError unless every node is a HW layer or light glue at the graph's start/end.

    Returns the glue nodes left in software, e.g. the input's NCHW->NHWC Transpose and the
    output's de-quantising Mul.
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
    return [SoftwareNode(name=n.name, op_type=n.op_type) for n in edge]
