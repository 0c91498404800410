"""Small qonnx Transformations that streamline graph networks (pools, residual adds, leaky
activations) into FINN's integer dataflow, and the provenance that names a node's QONNX origin.

The Brevitas structure these rewrites (and `flow.finn.stages.streamline`) expect, bit-widths b:
- input: an unsigned `QuantIdentity` (integer pixels, FINN reads the datatype from it);
- every conv/linear: Brevitas weight quantizer, `bias=False`, then BatchNorm, then its
  activation quantizer: `QuantReLU(bit_width=b)` (unsigned), `QuantReLU(max_val=6.0,
  scaling_impl_type="const")` for ReLU6, `QuantHardTanh(min_val, max_val,
  scaling_impl_type="const")` for Hardtanh (signed), `nn.LeakyReLU(a)` (0 < a < 1) followed by a
  signed `QuantIdentity(Int8ActPerTensorFloat, bit_width=b)`; the float op directly before the
  quantizer is folded into its thresholds (`AbsorbMonotonicIntoMultiThreshold`);
- residual add `y = act(q(a) + q(b))`: ONE signed `QuantIdentity` module `q` called on both
  inputs (one scale, so the scale Mul moves past the Add and the Add is integer:
  MoveLinearPastEltwiseAdd), the main branch's last conv has BatchNorm and no activation, the
  skip is either the block's input tensor (a quantized ReLU output) or a 1x1 conv + BatchNorm
  (projection); after the add a `QuantReLU(bit_width=b)` (its thresholds absorb the scale);
- `nn.MaxPool2d` directly after a quantized ReLU (positive scale: MoveMulPastMaxPool);
- `nn.AvgPool2d(k)` (no padding) after a quantizer: a sum pool whose 1/k² is absorbed into the
  next thresholds (`AveragePoolToSumPool`); no quantizer is needed after either pool;
- `nn.AdaptiveAvgPool2d(1)` (exported as GlobalAveragePool) after a quantized ReLU, then
  `torch.flatten` and a `QuantLinear`: FINN's GlobalAccPool sums, 1/N moves into the linear's
  output scale;
- depthwise: `QuantConv2d(c, c, k, groups=c)` + BatchNorm + quantized activation (-> VVAU).
"""
from __future__ import annotations

import numpy as np
from onnx import StringStringEntryProto, helper
from qonnx.core.datatype import DataType
from qonnx.transformation.base import Transformation
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import get_by_name

ORIGIN = "densiflow.origin"  # node metadata key: the name of the QONNX node a node came from


# ------------------------------------------------------------------------------- provenance


def origin(node) -> str | None:
    """The QONNX node name recorded on `node`, if any."""
    for p in node.metadata_props:
        if p.key == ORIGIN:
            return p.value
    return None


def _set_origin(node, name: str) -> None:
    node.metadata_props.append(StringStringEntryProto(key=ORIGIN, value=name))


class TagOrigins(Transformation):
    """Record each node's own name as its origin (run on the QONNX model as exported)."""

    def apply(self, model):
        for n in model.graph.node:
            if origin(n) is None:
                _set_origin(n, n.name or n.op_type)
        return model, False


class InheritOrigins(Transformation):
    """Give nodes that rewrites created the origin of the nearest tagged node downstream (a
    lowered Conv's Im2Col and MatMul end in the Conv's output), else upstream."""

    def apply(self, model):
        for n in model.graph.node:
            if origin(n) is None:
                found = (_nearest_origin(n, model.find_direct_successors)
                         or _nearest_origin(n, model.find_direct_predecessors))
                if found:
                    _set_origin(n, found)
        return model, False


class Traced(Transformation):
    """Run `inner`; a node it created inherits the origin of the node it replaced: the one
    whose parameter (weights, thresholds) it reads, else whose output tensor it produces (a
    Quant's MultiThreshold, a Conv's last Transpose), else as InheritOrigins says."""

    def __init__(self, inner: Transformation):
        super().__init__()
        self.inner = inner

    def apply(self, model):
        params = {t.name for t in model.graph.initializer}
        used, produced = {}, {}
        for n in model.graph.node:
            if (o := origin(n)) is not None:
                used.update({t: o for t in n.input if t in params})
                produced.update({t: o for t in n.output})
        model = model.transform(self.inner)
        for n in model.graph.node:
            if origin(n) is None:
                found = ([used[t] for t in n.input if t in used]
                         + [produced[t] for t in n.output if t in produced])
                if found:
                    _set_origin(n, found[0])
        return model.transform(InheritOrigins()), False


def _nearest_origin(node, step) -> str | None:
    """Breadth-first along `step` from node: the first recorded origin."""
    todo, seen = list(step(node) or []), set()
    while todo:
        n = todo.pop(0)
        if (o := origin(n)) is not None:
            return o
        if n.name not in seen:
            seen.add(n.name)
            todo.extend(step(n) or [])
    return None


# ------------------------------------------------------------------ monotonic activations


def _monotonic(model, node):
    """(f, guess of f^-1) in float32 for an elementwise non-decreasing node, else None."""
    if node.op_type == "LeakyRelu":
        attr = get_by_name(node.attribute, "alpha")
        alpha = np.float32(0.01 if attr is None else attr.f)
        if not 0 < alpha:
            return None
        return (lambda x: np.where(x >= 0, x, x * alpha),
                lambda t: np.where(t >= 0, t, t / alpha))
    if node.op_type == "Relu":  # f(x) >= t for every x when t <= 0
        return lambda x: np.maximum(x, 0), lambda t: np.where(t > 0, t, -np.inf)
    if node.op_type == "Clip":
        lo, hi = (np.float32(-np.inf if c is None else c) for c in (
            model.get_initializer(i) if i else None
            for i in (list(node.input[1:3]) + ["", ""])[:2]))
        return (lambda x: np.clip(x, lo, hi),
                lambda t: np.where(t <= lo, -np.inf, np.where(t > hi, np.inf, t)))
    return None


def least_preimage(f, guess, t: np.ndarray, steps: int = 4) -> np.ndarray:
    """The least float32 x with f(x) >= t (f non-decreasing), from `guess` by single ulps:
    exact, where t / alpha rounded could miss the boundary by one ulp."""
    t = t.astype(np.float32)
    x = np.asarray(guess(t), dtype=np.float32)
    for _ in range(steps):
        lower = np.nextafter(x, np.float32(-np.inf))
        x = np.where(f(lower) >= t, lower, x)
    for _ in range(steps):
        x = np.where(f(x) >= t, x, np.nextafter(x, np.float32(np.inf)))
    return x.astype(np.float32)


class AbsorbMonotonicIntoMultiThreshold(Transformation):
    """f -> MultiThreshold becomes MultiThreshold with thresholds f^-1(t), for an elementwise
    non-decreasing f (LeakyRelu with alpha > 0; Relu, Clip): f(x) >= t <=> x >= f^-1(t), the
    least x reaching t (-inf: always, +inf: never; RoundAndClipThresholds later clips them to
    the integer input's range). FINN's MultiThreshold compares x >= t."""

    def apply(self, model):
        for mt in model.get_nodes_by_op_type("MultiThreshold"):
            f = model.find_producer(mt.input[0])
            if f is None or model.is_fork_node(f) or (fns := _monotonic(model, f)) is None:
                continue
            thr = model.get_initializer(mt.input[1])
            model.set_initializer(mt.input[1], least_preimage(*fns, thr))
            mt.input[0] = f.input[0]
            model.graph.node.remove(f)
            return model.transform(InferDataTypes()), True
        return model, False


# -------------------------------------------------------------------------------- pooling


def _scalar(model, node) -> float | None:
    """The scalar constant of a Mul node, else None."""
    if node.op_type != "Mul" or len(node.input) < 2:
        return None
    c = model.get_initializer(node.input[1])
    return None if c is None or c.size != 1 else float(c.reshape(()))


def _zero_pads(node) -> bool:
    pads = get_by_name(node.attribute, "pads")
    return pads is None or not any(pads.ints)


class MoveScalarMulPastAveragePool(Transformation):
    """Mul(c) -> AveragePool becomes AveragePool -> Mul(c) (an average is linear), so the pool
    sees the integers of the quantizer before it."""

    def apply(self, model):
        for pool in model.get_nodes_by_op_type("AveragePool"):
            mul = model.find_producer(pool.input[0])
            if mul is None or model.is_fork_node(mul) or _scalar(model, mul) is None:
                continue
            x, mid, out = mul.input[0], pool.input[0], pool.output[0]
            pool.input[0], pool.output[0] = x, mid
            mul.input[0], mul.output[0] = mid, out
            g = model.graph
            g.node.remove(mul)
            g.node.insert(list(g.node).index(pool) + 1, mul)
            for t in (mid, out):
                model.set_tensor_datatype(t, DataType["FLOAT32"])
                model.set_tensor_shape(t, None)
            return model.transform(InferShapes()).transform(InferDataTypes()), True
        return model, False


class AveragePoolToSumPool(Transformation):
    """AveragePool(k, stride, no padding) of integers -> a sum pool (QuantAvgPool2d with no
    shift, FINN's InferPool makes it Pool "QuantAvgPool" with Size 0) -> Mul(1/k²), which
    streamlining absorbs into the next thresholds: the average is never rounded in hardware."""

    def apply(self, model):
        for pool in model.get_nodes_by_op_type("AveragePool"):
            idt = model.get_tensor_datatype(pool.input[0])
            kernel = list(get_by_name(pool.attribute, "kernel_shape").ints)
            strides = get_by_name(pool.attribute, "strides")
            strides = list(strides.ints) if strides else [1, 1]
            if (not idt.is_integer() or not _zero_pads(pool) or len(set(kernel)) != 1
                    or len(set(strides)) != 1):
                continue
            k, area = kernel[0], kernel[0] * kernel[1]
            # QuantAvgPool2d and FINN's Pool shift the sum right by (accumulator bits - obits);
            # obits covering the whole sum makes that shift 0
            ibits = idt.bitwidth()
            obits = int((2 ** ibits - 1) * area).bit_length() + int(idt.signed())
            summed = model.make_new_valueinfo_name()
            scale = model.make_new_valueinfo_name()
            model.set_initializer(scale, np.array(1.0 / area, dtype=np.float32))
            sum_node = helper.make_node(
                "QuantAvgPool2d", [pool.input[0]], [summed], domain="qonnx.custom_op.general",
                kernel=k, stride=strides[0], ibits=ibits, obits=obits,
                signed=int(idt.signed()), data_layout="NCHW", name=pool.name + "_sum")
            mul = helper.make_node("Mul", [summed, scale], [pool.output[0]],
                                   name=pool.name + "_scale")
            for n in (sum_node, mul):
                n.metadata_props.extend(pool.metadata_props)
            g = model.graph
            i = list(g.node).index(pool)
            g.node.remove(pool)
            g.node.insert(i, mul)
            g.node.insert(i, sum_node)
            model.set_tensor_datatype(pool.output[0], DataType["FLOAT32"])
            return model.transform(InferShapes()).transform(InferDataTypes()), True
        return model, False
