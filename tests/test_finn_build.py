"""QONNX -> FINN dataflow on real Brevitas networks: RTL layers, closed-form cycles, estimates."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from brevitas.export import export_qonnx
from brevitas.graph.calibrate import calibration_mode
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import Uint8ActPerTensorFloat
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from torch import nn

from flow.errors import ModelError, VerificationError
from flow.finn_build import build_dataflow, estimate_qonnx, mvau_folding, verify_hw_model

# ----------------------------------------------------------------------------- networks


class TinyCNN(nn.Module):
    """1x8x8 integers 0..15 -> conv3x3 (8) -> conv6x6 to 1x1 (16) -> linear (10), 4-bit."""

    def __init__(self):
        super().__init__()
        self.inp = QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=4)
        self.conv1 = QuantConv2d(1, 8, 3, bias=False, weight_bit_width=4)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = QuantReLU(bit_width=4)
        self.conv2 = QuantConv2d(8, 16, 6, bias=False, weight_bit_width=4)
        self.bn2 = nn.BatchNorm2d(16)
        self.act2 = QuantReLU(bit_width=4)
        self.fc = QuantLinear(16, 10, bias=False, weight_bit_width=4)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(self.inp(x))))
        x = self.act2(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


class Scaled(nn.Module):
    """Raw 0..255 pixels in, [0, 1] into the wrapped network (a Mul in the ONNX graph)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x / 255.0)


def _export(model: nn.Module, batches: list[torch.Tensor], path: Path) -> Path:
    """BatchNorm statistics and activation scales from data, then QONNX export."""
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
        model.eval()
        with calibration_mode(model):
            for x in batches:
                model(x)
    model.eval()
    export_qonnx(model, input_t=batches[0][:1], export_path=str(path), dynamo=False)
    return path


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    batches = [torch.randint(0, 16, (32, 1, 8, 8)).float() for _ in range(3)]
    return _export(TinyCNN(), batches, tmp_path_factory.mktemp("tiny") / "tiny.onnx")


@pytest.fixture(scope="module")
def tfc_onnx(tmp_path_factory) -> Path:
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.manual_seed(0)
    tfc, _ = model_with_cfg("tfc_2w2a", pretrained=False)
    batches = [torch.randint(0, 256, (64, 1, 28, 28)).float() for _ in range(2)]
    return _export(Scaled(tfc), batches, tmp_path_factory.mktemp("tfc") / "tfc_2w2a.onnx")


@pytest.fixture(scope="module")
def tiny(tiny_onnx, tmp_path_factory):
    # 200 MHz / 100,000 fps = 2,000 cycles per frame
    return estimate_qonnx(tiny_onnx, "zcu104", 100_000, tmp_path_factory.mktemp("tiny_build"),
                          input_dtype="UINT4")


@pytest.fixture(scope="module")
def tfc(tfc_onnx, tmp_path_factory):
    return estimate_qonnx(tfc_onnx, "ZCU104", 100_000, tmp_path_factory.mktemp("tfc_build"),
                          input_dtype="UINT8")


def _compute_rows(est, prefix="MVAU"):
    return [r for r in est.layers if r.op_type.startswith(prefix)]


# ----------------------------------------------------------------------------- (a) tiny CNN


def test_tiny_cnn_is_all_rtl_with_standalone_thresholds(tiny):
    assert tiny.layers and tiny.hls_nodes == []
    assert {r.impl_style for r in tiny.layers} == {"rtl"}
    kinds = [r.op_type for r in tiny.layers if not r.op_type.startswith("Streaming")]
    assert kinds == ["Thresholding_rtl", "ConvolutionInputGenerator_rtl", "MVAU_rtl",
                     "Thresholding_rtl", "ConvolutionInputGenerator_rtl", "MVAU_rtl",
                     "Thresholding_rtl", "MVAU_rtl"]
    # the python-executable HW model: MVAUs carry no thresholds of their own
    hw = ModelWrapper(tiny.paths["hw_python"])
    mvaus = hw.get_nodes_by_op_type("MVAU")
    assert len(mvaus) == 3
    assert all(getCustomOp(n).get_nodeattr("noActivation") == 1 for n in mvaus)
    assert len(hw.get_nodes_by_op_type("Thresholding")) == 3
    # only the input layout change and the output scale stay in software
    assert [n["op_type"] for n in tiny.outside_partition] == ["Transpose", "Mul"]


def test_tiny_cnn_mvau_cycles_match_closed_form(tiny):
    # (MW, MH, output pixels) from the network's geometry: conv1 3x3x1 -> 8 on 6x6,
    # conv2 6x6x8 -> 16 on 1x1, fc 16 -> 10
    geometry = [(9, 8, 36), (288, 16, 1), (16, 10, 1)]
    rows = _compute_rows(tiny)
    assert len(rows) == 3
    for row, (mw, mh, pixels) in zip(rows, geometry):
        assert mw % row.simd == 0 and mh % row.pe == 0
        assert row.cycles == mw // row.simd * mh // row.pe * pixels
        assert row.cycles <= tiny.target_cycles_per_frame == 2_000
    # Thresholding: channels / PE * pixels
    for row, (ch, pixels) in zip(_compute_rows(tiny, "Thresholding"), [(1, 64), (8, 36), (16, 1)]):
        assert row.cycles == ch // row.pe * pixels


def test_tiny_cnn_totals_and_performance(tiny):
    rows = tiny.layers
    assert all(r.lut >= 0 and r.bram18 >= 0 and r.uram >= 0 and r.dsp >= 0 for r in rows)
    assert tiny.totals["LUT"] == pytest.approx(sum(r.lut for r in rows))
    assert tiny.totals["DSP"] == pytest.approx(sum(r.dsp for r in rows)) and tiny.totals["DSP"] > 0
    assert tiny.totals["BRAM18"] == pytest.approx(sum(r.bram18 for r in rows))
    perf = tiny.performance
    slowest = max(r.cycles for r in rows)
    assert perf["steady_state_cycles"] == slowest
    assert perf["fps"] == pytest.approx(200e6 / slowest) and perf["fps"] >= 100_000
    assert perf["latency_cycles"] == sum(r.cycles for r in rows)  # a chain
    assert perf["latency_us"] == pytest.approx(perf["latency_cycles"] / 200.0)
    # FINN's own analysis agrees with hw_models.cycles
    assert tiny.finn_performance["max_cycles"] == slowest
    assert tiny.finn_performance["critical_path_cycles"] == perf["latency_cycles"]
    assert tiny.fits and tiny.fit["board"] == "ZCU104"
    assert set(tiny.fit["resources"]) == {"LUT", "BRAM18", "URAM", "DSP"}


def test_tiny_cnn_hw_model_executes_like_qonnx(tiny):
    assert tiny.verification["max_rel_error"] < 1e-5
    x = np.random.default_rng(1).integers(0, 16, (8, 1, 8, 8)).astype(np.float32)
    result = verify_hw_model(ModelWrapper(tiny.paths["qonnx"]),
                             ModelWrapper(tiny.paths["hw_python"]), x)
    assert result["max_rel_error"] < 1e-5 and result["argmax_agreement"] == 1.0


def test_tiny_cnn_artefacts(tiny):
    saved = json.loads((Path(tiny.paths["qonnx"]).parent / "estimate.json").read_text())
    assert saved == json.loads(json.dumps(tiny.to_dict()))
    assert all(Path(p).is_file() for p in tiny.paths.values())
    # the parent's dataflow partition points at the specialised child (what gets RTL-simulated)
    parent = ModelWrapper(tiny.paths["dataflow_parent"])
    (sdp,) = parent.get_nodes_by_op_type("StreamingDataflowPartition")
    assert getCustomOp(sdp).get_nodeattr("model") == tiny.paths["dataflow_rtl"]
    child = ModelWrapper(tiny.paths["dataflow_rtl"])
    assert all(n.op_type.endswith("_rtl") for n in child.graph.node)
    python_child = ModelWrapper(tiny.paths["dataflow_python"])
    assert python_child.get_nodes_by_op_type("MVAU")  # unspecialised, python-executable


def test_tiny_cnn_streams_need_no_fractional_width_converters(tiny):
    # a converter between widths that do not divide each other halves finn-rtllib's throughput
    child = ModelWrapper(tiny.paths["dataflow_rtl"])
    for node in child.get_nodes_by_op_type("StreamingDataWidthConverter_rtl"):
        w_in, w_out = (getCustomOp(node).get_nodeattr(k) for k in ("inWidth", "outWidth"))
        assert max(w_in, w_out) % min(w_in, w_out) == 0, (node.name, w_in, w_out)
    depths = {getCustomOp(n).get_nodeattr("depth")
              for n in child.get_nodes_by_op_type("StreamingFIFO_rtl")}
    assert depths == {32}


@pytest.mark.parametrize("args, expected", [
    # digits conv2: MW 3*3*16, MH 32, 6x6 pixels; FINN chose SIMD 9 PE 32 (576 cycles) next to a
    # sliding window of SIMD 8: 288 lanes again, SIMD a multiple of 8, MW/SIMD = 2
    ((144, 32, 36, 576, 8), (72, 4)),
    # a classifier FINN folded to SIMD == MW (10 cycles): half the SIMD, twice the PE
    ((64, 10, 1, 10, None), (32, 2)),
    # nothing reaches 1 cycle with MW/SIMD >= 2: the fastest allowed folding
    ((16, 4, 1, 1, None), (8, 4)),
])
def test_mvau_folding_closed_form(args, expected):
    mw, mh, vectors, max_cycles, in_simd = args
    simd, pe = mvau_folding(*args)
    assert (simd, pe) == expected
    assert mw % simd == 0 and mh % pe == 0 and mw // simd >= 2
    assert in_simd is None or simd % in_simd == 0 or in_simd % simd == 0


def test_verification_error_when_models_differ(tiny):
    hw = ModelWrapper(tiny.paths["hw_python"])
    mul = hw.get_nodes_by_op_type("Mul")[0]  # the output scale, left in software
    hw.set_initializer(mul.input[1], 2 * hw.get_initializer(mul.input[1]))
    x = np.random.default_rng(2).integers(0, 16, (2, 1, 8, 8)).astype(np.float32)
    with pytest.raises(VerificationError, match="differs from the QONNX model"):
        verify_hw_model(ModelWrapper(tiny.paths["qonnx"]), hw, x)


# ----------------------------------------------------------------------------- (b) TFC 2w2a


def test_tfc_2w2a_on_zcu104(tfc):
    mvaus = _compute_rows(tfc)
    assert [r.op_type for r in mvaus] == ["MVAU_rtl"] * 4  # 2-bit weights: RTL from 2 bits up
    assert tfc.hls_nodes == []
    for row, (mw, mh) in zip(mvaus, [(784, 64), (64, 64), (64, 64), (64, 10)]):
        assert row.cycles == mw // row.simd * mh // row.pe
    assert tfc.layers[1].op_type == "Reshape_rtl"  # the input flatten, a pass-through in RTL
    # the final TensorNorm (Mul, Add) stays in software
    assert [n["op_type"] for n in tfc.outside_partition] == ["Mul", "Add"]
    assert tfc.fits and tfc.performance["fps"] >= 100_000
    assert tfc.verification["max_rel_error"] < 1e-5


def test_too_small_board_reported_per_resource(tfc_onnx, tmp_path):
    est = estimate_qonnx(tfc_onnx, "pynq-z1", 1e9, tmp_path, input_dtype="UINT8",
                         verify_frames=0)
    assert est.target_cycles_per_frame == 0  # 100 MHz / 1e9 fps: as parallel as FINN can go
    reshape = next(r for r in est.layers if r.op_type == "Reshape_rtl")
    assert 28 % reshape.pe == 0  # the 1x1x28x28 -> 1x784 flatten streams rows of 28
    assert not est.fits and "DSP" in est.fit["over"]
    dsp = est.fit["resources"]["DSP"]
    assert dsp["used"] > dsp["available"] == 220 and not dsp["fits"]
    assert any("does not fit Pynq-Z1" in n for n in est.notes)
    assert any("fps not reached" in n for n in est.notes)


# ----------------------------------------------------------------------------- bad input


def test_missing_input_dtype_names_the_fix(tiny_onnx, tmp_path):
    with pytest.raises(ModelError, match="input_dtype.*UINT8"):
        estimate_qonnx(tiny_onnx, "zcu104", 1000, tmp_path)
    with pytest.raises(ModelError, match="not a QONNX datatype"):
        estimate_qonnx(tiny_onnx, "zcu104", 1000, tmp_path, input_dtype="BANANA")
    for bad in ("FLOAT32", "UINT99"):
        with pytest.raises(ModelError, match="integer datatype of 1 to 16 bits"):
            estimate_qonnx(tiny_onnx, "zcu104", 1000, tmp_path, input_dtype=bad)


def test_not_qonnx_or_not_onnx(tmp_path):
    plain = tmp_path / "float.onnx"
    torch.onnx.export(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.zeros(1, 4),
                      str(plain), dynamo=False)
    with pytest.raises(ModelError, match="not a QONNX model"):
        estimate_qonnx(plain, "zcu104", 1000, tmp_path / "w", input_dtype="UINT8")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelError, match="not a readable ONNX file"):
        estimate_qonnx(junk, "zcu104", 1000, tmp_path / "w")
    with pytest.raises(ModelError, match="not found"):
        estimate_qonnx(tmp_path / "missing.onnx", "zcu104", 1000, tmp_path / "w")


def test_unconvertible_layer_is_named(tmp_path):
    class FloatMiddle(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=4)
            self.fc1 = QuantLinear(16, 8, bias=False, weight_bit_width=4)
            self.act1 = QuantReLU(bit_width=4)
            self.float_fc = nn.Linear(8, 8, bias=False)  # float weights: no HW layer for this
            self.act2 = QuantReLU(bit_width=4)
            self.fc2 = QuantLinear(8, 4, bias=False, weight_bit_width=4)

        def forward(self, x):
            return self.fc2(self.act2(self.float_fc(self.act1(self.fc1(self.inp(x))))))

    torch.manual_seed(0)
    path = _export(FloatMiddle(), [torch.randint(0, 16, (16, 16)).float()], tmp_path / "fm.onnx")
    with pytest.raises(ModelError, match=r"MatMul.*Supported:"):
        estimate_qonnx(path, "zcu104", 1000, tmp_path / "w", input_dtype="UINT4")


def test_unreachable_target_names_the_slow_nodes_once(tiny_onnx, tmp_path, caplog):
    # 1e9 frames/s at 200 MHz: 1 cycle per frame, beyond any folding
    est = estimate_qonnx(tiny_onnx, "zcu104", 1e9, tmp_path, input_dtype="UINT4",
                         verify_frames=0)
    slow = {r.name for r in est.layers if r.cycles > 1}
    named = {m.split(" ")[0] for m in caplog.messages if "over the target of 1;" in m}
    assert slow and named == slow
    assert not any("did not reach the target" in m for m in caplog.messages)  # FINN's, mid-pass


def test_bad_target_fps_and_fifo_depth(tiny_onnx, tmp_path):
    with pytest.raises(ModelError, match="target_fps"):
        build_dataflow(ModelWrapper(str(tiny_onnx)), "zcu104", 0, tmp_path, "UINT4")
    with pytest.raises(ModelError, match="fifo_depth must be 2..65536"):
        build_dataflow(ModelWrapper(str(tiny_onnx)), "zcu104", 1000, tmp_path, "UINT4",
                       fifo_depth=1)
