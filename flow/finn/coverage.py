"""Which nodes became FINN HW layers; a clear error naming the ones that did not, with the
QONNX node each came from (`flow.finn.rewrites.origin`) and what to change in the network."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from flow.core.errors import ModelError

SUPPORTED_OPS = (
    "quantized MatMul/Gemm/Conv incl. depthwise (-> MVAU/VVAU), quantized activations "
    "MultiThreshold (-> Thresholding), Im2Col (-> ConvolutionInputGenerator), Pad (-> FMPadding), "
    "MaxPool/AveragePool of integers (-> Pool), GlobalAveragePool (-> GlobalAccPool), graph "
    "forks (-> DuplicateStreams), integer residual Add (-> AddStreams), TopK (-> LabelSelect), "
    "Concat, Split, Transpose (-> Shuffle)"
)
_QUANTIZE_INPUT = "quantize its input (QuantIdentity/QuantReLU before it)"
# what to change in the Brevitas network when a node of this type is left unconverted
ADVICE = {
    "MatMul": f"{_QUANTIZE_INPUT} and use a Brevitas weight quantizer (QuantConv2d/QuantLinear)",
    "Conv": f"{_QUANTIZE_INPUT} and use a Brevitas weight quantizer (QuantConv2d/QuantLinear)",
    "Im2Col": f"{_QUANTIZE_INPUT}: a conv or pool needs integer inputs",
    "Add": ("call ONE signed QuantIdentity on both inputs of the residual add (one scale), and a "
            "QuantReLU after it"),
    "MaxPool": "put the max-pool directly after a quantized ReLU (a positive scale)",
    "MaxPoolNHWC": "put the max-pool directly after a quantized ReLU (a positive scale)",
    "AveragePool": f"use nn.AvgPool2d without padding and {_QUANTIZE_INPUT}",
    "GlobalAveragePool": f"{_QUANTIZE_INPUT}",
    "Mul": "a float scale is left between layers: follow it by a quantizer (QuantIdentity)",
    "LeakyRelu": "follow it directly by a signed QuantIdentity",
}
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
    origin: str | None = None  # the QONNX node it came from


class NodeCoverage(BaseModel):
    """Where one node of the HW-layer model runs, and the QONNX node it came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    op_type: str
    origin: str | None
    runs: Literal["hw", "software", "blocking"]  # software: at the start/end; blocking: between


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
    from flow.finn.rewrites import origin

    between, edge = nodes_outside_hw(model)
    bad = between + [n for n in edge if n.op_type not in SOFTWARE_EDGE_OPS]
    if bad or not any(is_hw_node(n) for n in model.graph.node):
        raise ModelError(
            f"{source}: these nodes could not be converted to FINN HW layers: "
            f"{'; '.join(_describe(n) for n in bad or edge)}. Supported: {SUPPORTED_OPS}."
        )
    return [SoftwareNode(name=n.name, op_type=n.op_type, origin=origin(n)) for n in edge]


def _describe(node) -> str:
    """'MatMul_1 (MatMul, from QONNX node /fc1/MatMul): <advice>'."""
    from flow.finn.rewrites import origin

    where = f", from QONNX node {o}" if (o := origin(node)) else ""
    advice = ADVICE.get(node.op_type)
    return f"{node.name} ({node.op_type}{where})" + (f": {advice}" if advice else "")


def coverage_report(model) -> list[NodeCoverage]:
    """Every node of the HW-layer model: where it runs, and its QONNX origin."""
    from flow.finn.rewrites import origin

    blocking = {n.name for n in nodes_outside_hw(model)[0]}
    return [NodeCoverage(name=n.name, op_type=n.op_type, origin=origin(n),
                         runs="hw" if is_hw_node(n) else
                         "blocking" if n.name in blocking else "software")
            for n in model.graph.node]
