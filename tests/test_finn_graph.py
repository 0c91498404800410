"""FINN builds of graph networks: residual adds (identity and 1x1 projection skips), max/avg
pooling, depthwise + global average pooling, clipped and leaky activations.

Each small Brevitas network is exported to QONNX and run through densiflow's stages up to the
python-executable HW-layer model, which must (a) compute exactly the QONNX model's integers
before the output de-quantisation, (b) leave no node in software between HW layers and (c) be
made of the expected HW layers. The threshold rewrite is checked against execute_onnx.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from brevitas.export import export_qonnx
from brevitas.graph.calibrate import calibration_mode
from brevitas.nn import QuantConv2d, QuantHardTanh, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import Int8ActPerTensorFloat, Uint8ActPerTensorFloat
from onnx import TensorProto, helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.custom_op.registry import getCustomOp
from qonnx.util.basic import qonnx_make_model
from torch import nn

from flow.core.errors import ModelError
from flow.finn import stages
from flow.finn.coverage import check_hw_coverage, coverage_report
from flow.finn.rewrites import AbsorbMonotonicIntoMultiThreshold
from flow.finn.settings import finn_settings
from flow.finn.verify import random_input_batch

BITS = 4


def _conv(cin: int, cout: int, k: int, stride: int = 1, pad: int = 0, groups: int = 1):
    return QuantConv2d(cin, cout, k, stride=stride, padding=pad, groups=groups, bias=False,
                       weight_bit_width=BITS)


def _unsigned_in() -> QuantIdentity:
    return QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=BITS)


def _signed() -> QuantIdentity:
    return QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=BITS)


class Residual(nn.Module):
    """stem -> basic block (identity skip, or stride-2 with a 1x1 projection) -> linear; the two
    add inputs share one signed quantizer (`addq`), a QuantReLU follows the add."""

    def __init__(self, projection: bool = False, shared: bool = True):
        super().__init__()
        c, s, hw = (8, 2, 4) if projection else (4, 1, 8)
        self.inp = _unsigned_in()
        self.stem, self.bn0, self.act0 = _conv(1, 4, 3, pad=1), nn.BatchNorm2d(4), QuantReLU(
            bit_width=BITS)
        self.conv1, self.bn1, self.act1 = _conv(4, c, 3, s, 1), nn.BatchNorm2d(c), QuantReLU(
            bit_width=BITS)
        self.conv2, self.bn2 = _conv(c, c, 3, pad=1), nn.BatchNorm2d(c)
        self.shortcut = nn.Sequential(_conv(4, c, 1, s), nn.BatchNorm2d(c)) if projection else None
        self.addq = _signed()
        self.skipq = self.addq if shared else _signed()
        self.act2 = QuantReLU(bit_width=BITS)
        self.fc = QuantLinear(c * hw * hw, 10, bias=False, weight_bit_width=BITS)

    def forward(self, x):
        h = self.act0(self.bn0(self.stem(self.inp(x))))
        y = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(h)))))
        skip = h if self.shortcut is None else self.shortcut(h)
        return self.fc(torch.flatten(self.act2(self.addq(y) + self.skipq(skip)), 1))


class Pooled(nn.Module):
    """conv -> QuantReLU -> 2x2 max- or average-pool -> conv -> QuantReLU -> linear."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.inp = _unsigned_in()
        self.conv1, self.bn1, self.act1 = _conv(1, 4, 3, pad=1), nn.BatchNorm2d(4), QuantReLU(
            bit_width=BITS)
        self.pool = pool
        self.conv2, self.bn2, self.act2 = _conv(4, 4, 3, pad=1), nn.BatchNorm2d(4), QuantReLU(
            bit_width=BITS)
        self.fc = QuantLinear(4 * 4 * 4, 10, bias=False, weight_bit_width=BITS)

    def forward(self, x):
        x = self.pool(self.act1(self.bn1(self.conv1(self.inp(x)))))
        return self.fc(torch.flatten(self.act2(self.bn2(self.conv2(x))), 1))


class Separable(nn.Module):
    """conv -> depthwise 3x3 -> pointwise 1x1 -> AdaptiveAvgPool2d(1) -> linear."""

    def __init__(self):
        super().__init__()
        self.inp = _unsigned_in()
        self.conv1, self.bn1, self.act1 = _conv(2, 4, 3, pad=1), nn.BatchNorm2d(4), QuantReLU(
            bit_width=BITS)
        self.dw, self.bn2, self.act2 = _conv(4, 4, 3, pad=1, groups=4), nn.BatchNorm2d(4), \
            QuantReLU(bit_width=BITS)
        self.pw, self.bn3, self.act3 = _conv(4, 8, 1), nn.BatchNorm2d(8), QuantReLU(
            bit_width=BITS)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = QuantLinear(8, 10, bias=False, weight_bit_width=BITS)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(self.inp(x))))
        x = self.act3(self.bn3(self.pw(self.act2(self.bn2(self.dw(x))))))
        return self.fc(torch.flatten(self.gap(x), 1))


ACTIVATIONS = {
    "relu6": lambda: QuantReLU(bit_width=BITS, max_val=6.0, scaling_impl_type="const"),
    "hardtanh": lambda: QuantHardTanh(bit_width=BITS, min_val=-1.0, max_val=1.0,
                                      scaling_impl_type="const"),
    "leaky_relu": lambda: nn.Sequential(nn.LeakyReLU(0.125), _signed()),
}


class Activated(nn.Module):
    """conv -> BatchNorm -> the activation under test -> conv -> QuantReLU -> linear."""

    def __init__(self, act: str):
        super().__init__()
        self.inp = _unsigned_in()
        self.conv1, self.bn1, self.act1 = _conv(1, 4, 3, pad=1), nn.BatchNorm2d(4), ACTIVATIONS[
            act]()
        self.conv2, self.bn2, self.act2 = _conv(4, 4, 3, pad=1), nn.BatchNorm2d(4), QuantReLU(
            bit_width=BITS)
        self.fc = QuantLinear(4 * 8 * 8, 10, bias=False, weight_bit_width=BITS)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(self.inp(x))))
        return self.fc(torch.flatten(self.act2(self.bn2(self.conv2(x))), 1))


def _export(net: nn.Module, path: Path, channels: int = 1) -> ModelWrapper:
    """Random BatchNorm statistics and activation scales from data, then QONNX export."""
    torch.manual_seed(0)
    batches = [torch.randint(0, 16, (32, channels, 8, 8)).float() for _ in range(2)]
    net.train()
    with torch.no_grad():
        for x in batches:
            net(x)
        net.eval()
        with calibration_mode(net):
            for x in batches:
                net(x)
    export_qonnx(net.eval(), input_t=batches[0][:1], export_path=str(path), dynamo=False)
    return ModelWrapper(str(path))


def _hw_model(net: nn.Module, tmp_path: Path, channels: int = 1):
    """(prepared QONNX model, python-executable HW-layer model) through densiflow's stages."""
    with finn_settings(tmp_path / "finn"):
        qonnx = stages.prepare_qonnx(_export(net, tmp_path / "net.onnx", channels), "UINT4")
        hw = qonnx
        for stage in (stages.qonnx_to_finn, stages.tidy_up, stages.streamline,
                      stages.convert_to_hw, stages.minimize_bit_width):
            hw = stage(hw)
    return qonnx, hw


def _assert_exact(qonnx: ModelWrapper, hw: ModelWrapper, frames: int = 4) -> None:
    """HW outputs before the trailing de-quantising Mul equal QONNX's outputs / its scale."""
    (mul,) = [n for n in hw.graph.node if n.output[0] == hw.graph.output[0].name]
    assert mul.op_type == "Mul"
    scale = hw.get_initializer(mul.input[1])
    for frame in random_input_batch(qonnx, frames):
        ref = execute_onnx(qonnx, {qonnx.graph.input[0].name: frame[None]})
        got = execute_onnx(hw, {hw.graph.input[0].name: frame[None]},
                           return_full_exec_context=True)
        ints = ref[qonnx.graph.output[0].name] / scale
        assert np.abs(ints - np.round(ints)).max() < 1e-3
        np.testing.assert_array_equal(np.round(ints), got[mul.input[0]])


def _hw_ops(hw: ModelWrapper) -> Counter:
    """Counts of the HW layers' op types (no software node is allowed between them)."""
    outside = check_hw_coverage(hw, "net")
    assert [n.op_type for n in outside] == ["Transpose", "Mul"]  # input layout, output scale
    assert not [c for c in coverage_report(hw) if c.runs == "blocking"]
    return Counter(n.op_type for n in hw.graph.node if n.op_type not in ("Transpose", "Mul"))


def _attr(hw: ModelWrapper, op_type: str, name: str):
    return [getCustomOp(n).get_nodeattr(name) for n in hw.get_nodes_by_op_type(op_type)]


# ------------------------------------------------------------------------ HW-layer graphs


@pytest.mark.slow
@pytest.mark.parametrize("projection", [False, True], ids=["identity", "projection"])
def test_residual_block_becomes_duplicate_and_add_streams(projection, tmp_path):
    qonnx, hw = _hw_model(Residual(projection), tmp_path)
    _assert_exact(qonnx, hw)
    ops = _hw_ops(hw)
    assert ops["DuplicateStreams"] == 1 and ops["AddStreams"] == 1
    assert ops["MVAU"] == 4 + projection  # stem, conv1, conv2, (shortcut), fc
    # the add of two signed 4-bit streams grows by one bit; a QuantReLU's thresholds follow
    assert _attr(hw, "AddStreams", "inputDataTypes") == [["INT4", "INT4"]]
    (add,) = hw.get_nodes_by_op_type("AddStreams")
    assert hw.get_tensor_datatype(add.output[0]).name == "INT5"
    assert hw.find_consumer(add.output[0]).op_type == "Thresholding"
    # every HW layer knows the QONNX node it came from
    origins = {c.name: c.origin for c in coverage_report(hw)}
    assert origins[add.name] == "/Add"
    assert {origins[n.name] for n in hw.get_nodes_by_op_type("MVAU")} == {
        "/stem/Conv", "/conv1/Conv", "/conv2/Conv", "/fc/MatMul"} | (
        {"/shortcut/shortcut.0/Conv"} if projection else set())


@pytest.mark.slow
def test_max_pool_becomes_window_and_pool(tmp_path):
    qonnx, hw = _hw_model(Pooled(nn.MaxPool2d(2)), tmp_path)
    _assert_exact(qonnx, hw)
    ops = _hw_ops(hw)
    assert ops["Pool"] == 1 and ops["ConvolutionInputGenerator"] == 3
    assert _attr(hw, "Pool", "Function") == ["MaxPool"]


@pytest.mark.slow
def test_average_pool_is_a_sum_with_its_scale_in_the_next_thresholds(tmp_path):
    qonnx, hw = _hw_model(Pooled(nn.AvgPool2d(2)), tmp_path)
    _assert_exact(qonnx, hw)
    ops = _hw_ops(hw)
    assert ops["Pool"] == 1 and ops["MVAU"] == 3
    assert _attr(hw, "Pool", "Function") == ["QuantAvgPool"] and _attr(hw, "Pool", "Size") == [0]
    (pool,) = hw.get_nodes_by_op_type("Pool")
    assert hw.get_tensor_datatype(pool.output[0]).name == "UINT6"  # 4 x UINT4, not rounded


@pytest.mark.slow
def test_depthwise_separable_block_and_global_pool(tmp_path):
    qonnx, hw = _hw_model(Separable(), tmp_path, channels=2)
    _assert_exact(qonnx, hw)
    ops = _hw_ops(hw)
    assert ops["VVAU"] == 1 and ops["MVAU"] == 3 and ops["GlobalAccPool"] == 1
    (gap,) = hw.get_nodes_by_op_type("GlobalAccPool")
    assert hw.find_consumer(gap.output[0]).op_type == "MVAU"  # 1/64 is in the output scale


@pytest.mark.slow
@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_clipped_and_leaky_activations_become_thresholds(act, tmp_path):
    qonnx, hw = _hw_model(Activated(act), tmp_path)
    _assert_exact(qonnx, hw)
    ops = _hw_ops(hw)
    assert ops == Counter({"Thresholding": 3, "MVAU": 3, "FMPadding": 2,
                           "ConvolutionInputGenerator": 2})


@pytest.mark.slow
def test_add_of_differently_scaled_inputs_is_named_with_its_qonnx_node(tmp_path):
    with pytest.raises(ModelError) as err:
        qonnx, hw = _hw_model(Residual(shared=False), tmp_path)
        check_hw_coverage(hw, "net")
    msg = str(err.value)
    assert "from QONNX node /Add" in msg and "ONE signed QuantIdentity on both inputs" in msg
    assert "\n" not in msg


# ---------------------------------------------------------------- monotonic activations


def _act_then_thresholds(op: str, thresholds: np.ndarray, **attrs) -> ModelWrapper:
    """x -> op -> MultiThreshold (signed output) on 2 channels of 4x4 values."""
    inputs = ["x"] + [f"c{i}" for i in range(2 if op == "Clip" else 0)]
    nodes = [helper.make_node(op, inputs, ["y"], **attrs),
             helper.make_node("MultiThreshold", ["y", "t"], ["z"], domain="qonnx.custom_op.general",
                              out_dtype="INT4", out_bias=-8.0)]
    shape = [1, 2, 4, 4]
    graph = helper.make_graph(
        nodes, "act", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, shape)])
    model = ModelWrapper(qonnx_make_model(graph))
    model.set_tensor_shape("y", shape)
    model.set_initializer("t", thresholds.astype(np.float32))
    if op == "Clip":
        model.set_initializer("c0", np.array(-0.75, dtype=np.float32))
        model.set_initializer("c1", np.array(1.25, dtype=np.float32))
    return model


@pytest.mark.parametrize("op,attrs", [("LeakyRelu", {"alpha": 0.1}), ("LeakyRelu", {}),
                                      ("Relu", {}), ("Clip", {})])
def test_monotonic_activation_folds_into_thresholds_exactly(op, attrs):
    rng = np.random.default_rng(0)
    thresholds = np.sort(rng.uniform(-2, 2, size=(2, 15)), axis=1)
    model = _act_then_thresholds(op, thresholds, **attrs)
    folded = model.transform(AbsorbMonotonicIntoMultiThreshold())
    assert [n.op_type for n in folded.graph.node] == ["MultiThreshold"]
    # random values and, to hit every boundary, the thresholds' preimages themselves
    preimages = folded.get_initializer("t")
    edges = np.pad(np.where(np.isfinite(preimages), preimages, 0), ((0, 0), (0, 1)))
    for x in [rng.uniform(-25, 5, size=(1, 2, 4, 4)) for _ in range(50)] + [
            edges.reshape(1, 2, 4, 4), np.nextafter(edges, -np.inf).reshape(1, 2, 4, 4)]:
        x = x.astype(np.float32)
        np.testing.assert_array_equal(execute_onnx(model, {"x": x})["z"],
                                      execute_onnx(folded, {"x": x})["z"])


def test_a_forked_activation_is_not_folded():
    model = _act_then_thresholds("Relu", np.zeros((2, 15)))
    model.graph.node.append(helper.make_node("Identity", ["y"], ["y2"]))  # y used twice
    folded = model.transform(AbsorbMonotonicIntoMultiThreshold())
    assert [n.op_type for n in folded.graph.node] == ["Relu", "MultiThreshold", "Identity"]
