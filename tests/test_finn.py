"""QONNX -> FINN dataflow on real Brevitas networks: RTL layers, closed-form cycles, estimates
checked against FINN's own analysis passes, the typed result, settings and noise handling."""
import logging
import math
import os
import shutil
import sys
import warnings
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

from flow.core.errors import ConfigError, ModelError, VerificationError
from flow.finn import (
    LOG_FILE,
    RESULT_FILE,
    FinnBuild,
    InputDtypeError,
    ParameterError,
    build_dataflow,
    estimate_qonnx,
    finn_settings,
    verify_hw_model,
)
from flow.finn.folding import mvau_folding
from hw_models.resources import BUDGETED, Resources, ResourceSource
from hw_models.rules import DEFAULT_FIFO_DEPTH, MAX_FIFO_DEPTH, MAX_INPUT_BITS, mvau_simd_ok

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
    hw = ModelWrapper(str(tiny.path("hw_python")))
    mvaus = hw.get_nodes_by_op_type("MVAU")
    assert len(mvaus) == 3
    assert all(getCustomOp(n).get_nodeattr("noActivation") == 1 for n in mvaus)
    assert len(hw.get_nodes_by_op_type("Thresholding")) == 3
    # only the input layout change and the output scale stay in software
    assert [n.op_type for n in tiny.outside_partition] == ["Transpose", "Mul"]


def test_tiny_cnn_mvau_cycles_match_closed_form(tiny):
    # (MW, MH, output pixels) from the network's geometry: conv1 3x3x1 -> 8 on 6x6,
    # conv2 6x6x8 -> 16 on 1x1, fc 16 -> 10
    geometry = [(9, 8, 36), (288, 16, 1), (16, 10, 1)]
    rows = _compute_rows(tiny)
    assert len(rows) == 3
    for row, (mw, mh, pixels) in zip(rows, geometry):
        assert mw % row.simd == 0 and mh % row.pe == 0
        assert mvau_simd_ok(mw, row.simd)  # the RTL rule of hw_models.rules
        assert row.cycles == mw // row.simd * mh // row.pe * pixels
        assert row.cycles <= tiny.target_cycles_per_frame == 2_000
    # Thresholding: channels / PE * pixels
    for row, (ch, pixels) in zip(_compute_rows(tiny, "Thresholding"), [(1, 64), (8, 36), (16, 1)]):
        assert row.cycles == ch // row.pe * pixels


def test_tiny_cnn_totals_and_performance(tiny):
    rows = tiny.layers
    assert tiny.source is ResourceSource.FINN_ESTIMATE
    for res in BUDGETED:
        assert tiny.totals.get(res) == pytest.approx(sum(r.resources.get(res) for r in rows))
    assert tiny.totals.dsp > 0 and tiny.totals.ff is None  # FINN estimates no FFs
    perf = tiny.performance
    slowest = max(r.cycles for r in rows)
    assert perf.steady_state_cycles == slowest
    assert perf.fps == pytest.approx(200e6 / slowest) and perf.fps >= 100_000
    assert perf.latency_cycles == sum(r.cycles for r in rows)  # a chain
    assert perf.latency_us == pytest.approx(perf.latency_cycles / 200.0)
    # FINN's own analysis agrees with hw_models.cycles
    assert tiny.finn_performance.max_cycles == slowest
    assert tiny.finn_performance.critical_path_cycles == perf.latency_cycles
    assert tiny.fits and tiny.fit.board == "ZCU104" and tiny.fit.source is tiny.source
    assert tiny.fit.row("dsp").used == tiny.totals.dsp and tiny.fit.row("dsp").available == 1_728
    assert [r.resource for r in tiny.fit.rows] == list(BUDGETED)


def test_tiny_cnn_estimates_are_finns_own_per_layer(tiny):
    # the rows restate FINN's res_estimation / exp_cycles_per_layer of the saved RTL model
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    from finn.analysis.fpgadataflow.res_estimation import res_estimation

    child = ModelWrapper(str(tiny.path("dataflow_rtl")))
    with finn_settings(tiny.work_dir):
        res = child.analysis(lambda m: res_estimation(m, tiny.part))
        cycles = child.analysis(exp_cycles_per_layer)
    assert [r.name for r in tiny.layers] == [n.name for n in child.graph.node]
    for row in tiny.layers:
        assert row.cycles == cycles[row.name]
        assert row.resources.lut == res[row.name]["LUT"]
        assert row.resources.bram18 == res[row.name]["BRAM_18K"]
        assert row.resources.dsp == res[row.name]["DSP"]


def test_tiny_cnn_hw_model_executes_like_qonnx(tiny):
    assert tiny.verification.max_rel_error < 1e-5 and tiny.verification.frames == 4
    x = np.random.default_rng(1).integers(0, 16, (8, 1, 8, 8)).astype(np.float32)
    result = verify_hw_model(ModelWrapper(str(tiny.path("qonnx"))),
                             ModelWrapper(str(tiny.path("hw_python"))), x)
    assert result.max_rel_error < 1e-5 and result.argmax_agreement == 1.0


def test_tiny_cnn_artefacts(tiny):
    assert all(tiny.path(key).is_file() for key in tiny.paths)
    # the parent's dataflow partition points at the specialised child (what gets RTL-simulated)
    parent = ModelWrapper(str(tiny.path("dataflow_parent")))
    (sdp,) = parent.get_nodes_by_op_type("StreamingDataflowPartition")
    assert getCustomOp(sdp).get_nodeattr("model") == str(tiny.path("dataflow_rtl"))
    child = ModelWrapper(str(tiny.path("dataflow_rtl")))
    assert all(n.op_type.endswith("_rtl") for n in child.graph.node)
    python_child = ModelWrapper(str(tiny.path("dataflow_python")))
    assert python_child.get_nodes_by_op_type("MVAU")  # unspecialised, python-executable


def test_result_round_trips_through_json_and_a_renamed_folder(tiny, tmp_path):
    text = tiny.model_dump_json()
    again = FinnBuild.model_validate_json(text)
    assert again.model_dump() == tiny.model_dump() and again.at(tiny.work_dir) == tiny
    assert FinnBuild.load(tiny.work_dir) == tiny  # estimate.json, as saved by the build
    assert '"source":"finn_estimate"' in text
    # paths are relative: the build still resolves after its folder moved (a step's .partial)
    assert not any(Path(p).is_absolute() for p in tiny.paths.values())
    moved = shutil.copytree(tiny.work_dir, tmp_path / "moved")
    assert FinnBuild.load(moved).path("dataflow_rtl") == moved / tiny.paths["dataflow_rtl"]
    assert FinnBuild.load(moved).path("dataflow_rtl").is_file()
    # a resource the board lacks (utilisation inf) survives the round trip too
    over = tiny.model_copy(update={"board": "Pynq-Z1", "totals": Resources(uram=2)})
    back = FinnBuild.model_validate_json(over.model_dump_json())
    assert back.fit.over == ["uram"] and math.isinf(back.fit.row("uram").utilisation)
    with pytest.raises(ModelError, match="does not know its folder"):
        again.path("qonnx")


def test_broken_result_file_names_the_file(tmp_path):
    (tmp_path / RESULT_FILE).write_text('{"board": ')
    with pytest.raises(ModelError, match=rf"{RESULT_FILE} is not a readable FINN build"):
        FinnBuild.load(tmp_path)


def test_tiny_cnn_streams_need_no_fractional_width_converters(tiny):
    # a converter between widths that do not divide each other halves finn-rtllib's throughput
    child = ModelWrapper(str(tiny.path("dataflow_rtl")))
    for node in child.get_nodes_by_op_type("StreamingDataWidthConverter_rtl"):
        w_in, w_out = (getCustomOp(node).get_nodeattr(k) for k in ("inWidth", "outWidth"))
        assert max(w_in, w_out) % min(w_in, w_out) == 0, (node.name, w_in, w_out)
    depths = {getCustomOp(n).get_nodeattr("depth")
              for n in child.get_nodes_by_op_type("StreamingFIFO_rtl")}
    assert depths == {DEFAULT_FIFO_DEPTH} and tiny.fifo_depth == DEFAULT_FIFO_DEPTH


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
    mw, mh, _, _, in_simd = args
    simd, pe = mvau_folding(*args)
    assert (simd, pe) == expected
    assert mw % simd == 0 and mh % pe == 0 and mw // simd >= 2
    assert in_simd is None or simd % in_simd == 0 or in_simd % simd == 0


def test_verification_error_when_models_differ(tiny):
    hw = ModelWrapper(str(tiny.path("hw_python")))
    mul = hw.get_nodes_by_op_type("Mul")[0]  # the output scale, left in software
    hw.set_initializer(mul.input[1], 2 * hw.get_initializer(mul.input[1]))
    x = np.random.default_rng(2).integers(0, 16, (2, 1, 8, 8)).astype(np.float32)
    with pytest.raises(VerificationError, match="differs from the QONNX model"):
        verify_hw_model(ModelWrapper(str(tiny.path("qonnx"))), hw, x)


# ----------------------------------------------------------------------------- (b) TFC 2w2a


@pytest.mark.slow  # FINN builds of brevitas_examples' TFC
def test_tfc_2w2a_on_zcu104(tfc):
    mvaus = _compute_rows(tfc)
    assert [r.op_type for r in mvaus] == ["MVAU_rtl"] * 4  # 2-bit weights: RTL from 2 bits up
    assert tfc.hls_nodes == []
    for row, (mw, mh) in zip(mvaus, [(784, 64), (64, 64), (64, 64), (64, 10)]):
        assert row.cycles == mw // row.simd * mh // row.pe
    assert tfc.layers[1].op_type == "Reshape_rtl"  # the input flatten, a pass-through in RTL
    # the final TensorNorm (Mul, Add) stays in software
    assert [n.op_type for n in tfc.outside_partition] == ["Mul", "Add"]
    assert tfc.fits and tfc.performance.fps >= 100_000
    assert tfc.verification.max_rel_error < 1e-5


@pytest.mark.slow  # FINN builds of brevitas_examples' TFC
def test_too_small_board_reported_per_resource(tfc_onnx, tmp_path):
    est = estimate_qonnx(tfc_onnx, "pynq-z1", 1e9, tmp_path, input_dtype="UINT8",
                         verify_frames=0, folding_method="finn")
    assert est.target_cycles_per_frame == 1  # 100 MHz / 1e9 fps: as parallel as FINN can go
    assert est.verification is None
    reshape = next(r for r in est.layers if r.op_type == "Reshape_rtl")
    assert 28 % reshape.pe == 0  # the 1x1x28x28 -> 1x784 flatten streams rows of 28
    assert not est.fits and "dsp" in est.fit.over
    dsp = est.fit.row("dsp")
    assert dsp.used == est.totals.dsp > dsp.available == 220 and not dsp.fits
    assert any("does not fit Pynq-Z1" in n for n in est.notes)
    (slow,) = [n for n in est.notes if "fps not reached" in n]
    assert f"needs {est.performance.steady_state_cycles} cycles" in slow and "allows 0.1" in slow


@pytest.mark.slow  # FINN builds of brevitas_examples' TFC
def test_optimiser_stays_on_the_board_where_setfolding_overruns_it(tfc_onnx, tmp_path):
    """The folding optimiser, at an unreachable target: the fastest design within the board,
    where FINN's SetFolding overruns it (FINN's estimate of both), ceiling reported."""
    est = estimate_qonnx(tfc_onnx, "pynq-z1", 1e9, tmp_path, input_dtype="UINT8",
                         verify_frames=0)
    assert est.fits and est.folding_report is not None
    rep = est.folding_report
    assert rep.finn.fps == pytest.approx(est.performance.fps)
    assert rep.finn.resources == est.totals
    # SetFolding at the same unreachable target unrolls past the board; the optimiser stays on it
    assert not rep.setfolding.fits and rep.setfolding.fps > rep.finn.fps
    assert rep.binding != "target" and 0 < rep.fraction_of_bound <= 1.0 + 1e-9
    assert any("fps not reached" in n for n in est.notes)


# ----------------------------------------------------------------------------- bad input


def test_missing_input_dtype_names_the_tensor_and_the_fix(tiny_onnx, tmp_path):
    with pytest.raises(InputDtypeError, match="input_dtype.*UINT8") as err:
        estimate_qonnx(tiny_onnx, "zcu104", 1000, tmp_path)
    assert isinstance(err.value, ModelError)
    assert err.value.tensor == ModelWrapper(str(tiny_onnx)).graph.input[0].name
    assert err.value.tensor in str(err.value) and "FLOAT32" in str(err.value)
    cli = err.value.message("--input-dtype")
    assert "--input-dtype" in cli and "input_dtype" not in cli.replace("--input-dtype", "")
    with pytest.raises(InputDtypeError, match="not a QONNX datatype"):
        estimate_qonnx(tiny_onnx, "zcu104", 1000, tmp_path, input_dtype="BANANA")
    for bad in ("FLOAT32", "UINT99", f"UINT{MAX_INPUT_BITS + 1}"):
        with pytest.raises(InputDtypeError,
                           match=f"integer datatype of 1 to {MAX_INPUT_BITS} bits"):
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


@pytest.mark.slow  # a FINN build of its own
def test_unreachable_target_names_the_slow_nodes_once(tiny_onnx, tmp_path, caplog):
    # 1e9 frames/s at 200 MHz: 1 cycle per frame, beyond any folding
    est = estimate_qonnx(tiny_onnx, "zcu104", 1e9, tmp_path, input_dtype="UINT4",
                         verify_frames=0)
    slow = {r.name for r in est.layers if r.cycles > 1}
    named = {m.split(" ")[0] for m in caplog.messages if "over the target of 1;" in m}
    assert slow and named == slow
    # FINN's mid-pass warnings (before its second pass reaches the target) never reach the
    # terminal (hw_models.folding.finn_setfolding runs SetFolding's passes with them silenced)
    assert not any("did not reach the target" in m for m in caplog.messages)


BAD_PARAMETERS = [
    ({"target_fps": 0}, "target_fps"), ({"target_fps": -5.0}, "target_fps"),
    ({"target_fps": math.inf}, "target_fps"), ({"target_fps": math.nan}, "target_fps"),
    ({"target_fps": 1e-320}, "target_fps"),
    ({"clock_mhz": 0}, "clock_mhz"), ({"clock_mhz": -100.0}, "clock_mhz"),
    ({"clock_mhz": math.inf}, "clock_mhz"),
    ({"fifo_depth": 1}, "fifo_depth"), ({"fifo_depth": MAX_FIFO_DEPTH + 1}, "fifo_depth"),
    ({"fifo_depth": 32.5}, "fifo_depth"), ({"verify_frames": -1}, "verify_frames"),
]


@pytest.mark.parametrize("bad, name", BAD_PARAMETERS, ids=[str(b) for b, _ in BAD_PARAMETERS])
def test_bad_parameters_give_one_line_naming_them(tiny_onnx, tmp_path, bad, name):
    args = {"target_fps": 1000.0} | bad
    work = tmp_path / "w"
    with pytest.raises(ParameterError) as err:
        build_dataflow(ModelWrapper(str(tiny_onnx)), "zcu104", work_dir=work,
                       input_dtype="UINT4", **args)
    assert isinstance(err.value, ConfigError) and err.value.parameter == name
    text = str(err.value)
    assert text.startswith((f"{name} must", f"{name} is"))
    assert "\n" not in text and repr(bad[name]) in text
    assert err.value.message("--" + name.replace("_", "-")).startswith("--")
    assert not work.exists()  # rejected before anything is written


@pytest.mark.slow  # a FINN build of its own
def test_clock_mhz_is_used_when_given(tiny_onnx, tmp_path):
    est = build_dataflow(ModelWrapper(str(tiny_onnx)), "zcu104", 100_000, tmp_path, "UINT4",
                         clock_mhz=50.0, verify_frames=0)
    assert est.clock_mhz == 50.0 and est.target_cycles_per_frame == 500
    assert est.performance.fps == pytest.approx(50e6 / est.performance.steady_state_cycles)


# ----------------------------------------------------------------------------- FINN's environment


def test_finn_settings_restore_environ_and_finn_state(tmp_path, monkeypatch):
    import finn.util.settings as finn_global

    monkeypatch.delenv("FINN_BUILD_DIR", raising=False)
    monkeypatch.delenv("FINN_DEPS", raising=False)  # an earlier FINN user may have left it
    env, settings = dict(os.environ), finn_global._SETTINGS
    with pytest.raises(RuntimeError, match="inside"), finn_settings(tmp_path) as build:
        assert build == tmp_path.resolve() / "finn_build" and build.is_dir()
        assert os.environ["FINN_BUILD_DIR"] == str(build)
        assert finn_global.get_settings().finn_build_dir == build
        assert set(os.environ) - set(env) >= {"FINN_BUILD_DIR", "FINN_DEPS"}  # FINN's own
        raise RuntimeError("inside")
    assert dict(os.environ) == env and finn_global._SETTINGS is settings


def test_finn_settings_keep_the_callers_build_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FINN_BUILD_DIR", str(tmp_path / "mine"))
    with finn_settings(tmp_path / "work") as build:
        assert build == (tmp_path / "mine").resolve()
    assert os.environ["FINN_BUILD_DIR"] == str(tmp_path / "mine")


def _stderr_showwarning(message, category, filename, lineno, file=None, line=None):
    """Python's own way of printing a warning (pytest records them instead)."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@pytest.mark.slow  # a FINN build of its own
def test_finn_noise_goes_to_the_log_file_not_the_terminal(tiny_onnx, tmp_path, capfd,
                                                         monkeypatch):
    # as outside pytest: warnings and log records are printed on stderr
    monkeypatch.setattr(warnings, "showwarning", _stderr_showwarning)
    terminal = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(terminal)
    try:
        build_dataflow(ModelWrapper(str(tiny_onnx)), "zcu104", 1e9, tmp_path, "UINT4",
                       verify_frames=1)
    finally:
        logging.getLogger().removeHandler(terminal)
    err = capfd.readouterr().err
    finn_log = (tmp_path / LOG_FILE).read_text()
    for noise in ("Assuming 4D input is NCHW", "inputDataType changing"):
        assert noise in finn_log and noise not in err, noise
    assert "did not reach the target" not in err
    # densiflow's own warnings still reach the terminal
    assert "over the target of 1" in err and "fps not reached" in err
    assert warnings.showwarning is _stderr_showwarning  # restored
    assert logging.getLogger("finn_logger").propagate and not logging.getLogger(
        "finn_logger").handlers


def _open_batch(src: Path, dst: Path, dim: str | int, axis: int = 0) -> Path:
    """A copy of a QONNX file whose input dimension `axis` is open (`dim`: a dim_param name,
    or 0 / -1), and the output's too for the batch (axis 0)."""
    import onnx

    m = onnx.load(str(src))
    for vi in (m.graph.input[0], m.graph.output[0])[:1 if axis else 2]:
        d = vi.type.tensor_type.shape.dim[axis]
        d.Clear()
        if isinstance(dim, str):
            d.dim_param = dim
        else:
            d.dim_value = dim
    onnx.save(m, str(dst))
    return dst


@pytest.mark.slow  # a FINN build of its own
def test_open_batch_dimension_is_set_to_one(tiny_onnx, tmp_path, caplog):
    """Issue 16 defect 7: a dynamic batch ("batch") gave a traceback (input shape (0, ...))."""
    path = _open_batch(tiny_onnx, tmp_path / "dyn.onnx", "batch")
    with caplog.at_level(logging.INFO, logger="flow.finn.stages"):
        est = estimate_qonnx(path, "zcu104", 100_000, tmp_path / "w", input_dtype="UINT4")
    assert est.verification.mismatched_outputs == 0
    lines = [r.getMessage() for r in caplog.records if "open batch" in r.getMessage()]
    assert len(lines) == 1 and "(batch) set to 1" in lines[0]
    qonnx = ModelWrapper(str(est.path("qonnx")))
    assert qonnx.get_tensor_shape(qonnx.graph.input[0].name) == [1, 1, 8, 8]


@pytest.mark.slow  # a FINN build of its own
@pytest.mark.parametrize("dim", [0, -1])
def test_zero_or_negative_batch_dimension_is_set_to_one(tiny_onnx, tmp_path, dim):
    from flow.finn.stages import fix_batch_size

    model = ModelWrapper(str(_open_batch(tiny_onnx, tmp_path / "dyn.onnx", dim)))
    fixed = fix_batch_size(model)
    assert fixed.get_tensor_shape(fixed.graph.input[0].name) == [1, 1, 8, 8]
    assert fixed.get_tensor_shape(fixed.graph.output[0].name) == [1, 10]


def test_open_non_batch_dimension_names_the_tensor(tiny_onnx, tmp_path):
    path = _open_batch(tiny_onnx, tmp_path / "dyn.onnx", "height", axis=2)
    with pytest.raises(ModelError, match=r"dyn.onnx: input \S+ has the open shape .*'height'.*"
                                         "fixed input shape"):
        estimate_qonnx(path, "zcu104", 100_000, tmp_path / "w", input_dtype="UINT4")
