"""The cost model, cycle model and folding optimiser on the layers graph networks add (depthwise
VVAU, pooling, global pooling, stream duplication and residual adds), against FINN's own
get_exp_cycles / estimates / verify_node of real FINN nodes and closed forms."""
import math
import random

import pytest

from hw_models.calibrate import finn_estimate, finn_node, init_finn, random_vvau
from hw_models.cost import (
    AddStreamsLayer,
    DuplicateStreamsLayer,
    GlobalAccPoolLayer,
    PoolLayer,
    VvauLayer,
    estimate,
    layer_cycles,
    layer_from_node,
)
from hw_models.cycles import critical_path_cycles, pipeline_performance, topological_order

ZU = "xczu7ev-ffvc1156-2-e"
Z7 = "xc7z020clg400-1"


@pytest.fixture(scope="module", autouse=True)
def finn(finn_build_dir):
    init_finn()


def vvau_node(ch=16, k=3, dim=5, pe=4, simd=3, impl="rtl", w=4, a=4, **extra):
    attrs = dict(Channels=ch, Kernel=[k, k], Dim=[dim, dim], PE=pe, SIMD=simd,
                 inputDataType=f"UINT{a}", weightDataType=f"INT{w}", accDataType="INT16",
                 outputDataType="INT16", noActivation=1, ActVal=0, mem_mode="internal_decoupled",
                 ram_style="auto", resType="dsp" if impl == "rtl" else "auto")
    return finn_node(f"VVAU_{impl}", **(attrs | extra))


# ----------------------------------------------------------------------------- cycles per node


def test_vvau_cycles_and_dsps_closed_form_match_finn():
    # (channels / PE) * (k*k / SIMD) * H * W; DSP58: PE * ceil(SIMD / 3)
    node = vvau_node(ch=32, k=3, dim=7, pe=8, simd=9)
    layer = layer_from_node(node, ZU)
    assert isinstance(layer, VvauLayer) and layer.node_type == "VVAU_rtl"
    ref, cycles = finn_estimate(node, ZU)
    assert layer_cycles(layer) == (32 // 8) * (9 // 9) * 7 * 7 == cycles == 196
    assert estimate(layer).resources.dsp == 8 * math.ceil(9 / 3) == ref.dsp == 24


@pytest.mark.parametrize("impl", ["rtl", "hls"])
def test_random_vvaus_match_finn_cycles_and_estimate(impl):
    rng = random.Random(3)
    for _ in range(40):
        node, part = random_vvau(rng, impl), rng.choice((ZU, Z7))
        got, (ref, cycles) = estimate(layer_from_node(node, part)), finn_estimate(node, part)
        assert got.cycles == cycles
        for res in ("lut", "bram18", "uram", "dsp"):
            assert got.resources.get(res) == pytest.approx(ref.get(res), rel=0.01, abs=1), res


@pytest.mark.parametrize("ch, pe, vecs", [(16, 4, [1, 4, 4]), (64, 64, [1, 7, 7]),
                                          (10, 1, [1, 1, 1])])
def test_global_acc_pool_and_duplicate_cycles_match_finn(ch, pe, vecs):
    gap = finn_node("GlobalAccPool_hls", NumChannels=ch, PE=pe, inputDataType="UINT4",
                    numInputVectors=vecs)
    dup = finn_node("DuplicateStreams_hls", NumChannels=ch, PE=pe, NumOutputStreams=2,
                    inputDataType="UINT4", numInputVectors=vecs)
    pixels = math.prod(vecs)
    g, d = layer_from_node(gap, ZU), layer_from_node(dup, ZU)
    assert isinstance(g, GlobalAccPoolLayer) and isinstance(d, DuplicateStreamsLayer)
    assert layer_cycles(g) == (ch // pe) * (pixels + 1) == finn_estimate(gap, ZU)[1]
    assert layer_cycles(d) == (ch // pe) * pixels == finn_estimate(dup, ZU)[1]
    # the output datatype FINN grows: pixels * max input in the fewest bits
    assert g.output_bits == math.ceil(math.log2(pixels * 15 + 1))


def test_pool_cycles_match_finn():
    node = finn_node("Pool_hls", Channels=16, PE=4, KernelSize=[2, 2], Function="MaxPool",
                     OutImgDims=[3, 3], InputDataType="UINT4", OutputDataType="UINT4",
                     BatchSize=1)
    layer = layer_from_node(node, ZU)
    assert isinstance(layer, PoolLayer) and layer.function == "MaxPool"
    assert layer_cycles(layer) == 16 * 4 // 4 * 9 == finn_estimate(node, ZU)[1]


def _registered(op_type: str) -> bool:
    from qonnx.custom_op.registry import getCustomOp

    try:
        import hw_models.finn_ops  # noqa: F401

        getCustomOp(finn_node(op_type))
    except Exception:  # noqa: BLE001 - not (yet) registered, or not importable
        return False
    return True


DENSIFLOW_OPS = {
    "Pool_rtl": dict(Channels=8, PE=2, KernelSize=[2, 2], Function="MaxPool", OutImgDims=[2, 2],
                     InputDataType="UINT4", OutputDataType="UINT4", BatchSize=1),
    "GlobalAccPool_rtl": dict(NumChannels=8, PE=2, inputDataType="UINT4",
                              numInputVectors=[1, 4, 4]),
    "DuplicateStreams_rtl": dict(NumChannels=8, PE=2, NumOutputStreams=2, inputDataType="UINT4",
                                 numInputVectors=[1, 4, 4]),
    "AddStreams_rtl": dict(NumChannels=8, PE=2, inputDataTypes=["INT4", "INT5"],
                           numInputVectors=[1, 4, 4]),
}


@pytest.mark.parametrize("op_type", sorted(DENSIFLOW_OPS))
def test_densiflow_rtl_ops_cycles_match_their_get_exp_cycles(op_type):
    """densiflow's RTL ops (hw_models.finn_ops): the closed form equals the op's own count."""
    if not _registered(op_type):
        pytest.skip(f"{op_type} is not registered by hw_models.finn_ops yet")
    from qonnx.custom_op.registry import getCustomOp

    node = finn_node(op_type, **DENSIFLOW_OPS[op_type])
    layer = layer_from_node(node, ZU)
    assert layer.node_type == op_type
    assert layer_cycles(layer) == int(getCustomOp(node).get_exp_cycles())


@pytest.mark.parametrize("builder", ["random_pool_rtl", "random_global_acc_pool",
                                     "random_duplicate_streams", "random_add_streams"])
def test_densiflow_rtl_ops_estimates_match_their_own(builder):
    """Fresh seed: the calibrated model reproduces each op's lut/bram/dsp_estimation."""
    import hw_models.calibrate as cal

    rng = random.Random(99)
    for _ in range(20):
        node = getattr(cal, builder)(rng)
        got, (ref, cycles) = estimate(layer_from_node(node, ZU)), finn_estimate(node, ZU)
        assert got.cycles == cycles
        for res in ("lut", "bram18", "uram", "dsp"):
            assert got.resources.get(res) == pytest.approx(ref.get(res), rel=0.03, abs=1), res


def test_add_streams_layer_terms_grow_with_lanes():
    a = AddStreamsLayer(channels=16, pe=2, vectors=4, input_bits=(4, 5), output_bits=6)
    b = a.model_copy(update={"pe": 8})
    assert layer_cycles(a) == 8 * 4 and layer_cycles(b) == 2 * 4
    from hw_models.cost import layer_terms

    assert layer_terms(b)["lut"]["width"] == 4 * layer_terms(a)["lut"]["width"] == 8 * 9


# ----------------------------------------------------------------------------- DAG performance


def test_dag_interval_and_latency_closed_form():
    # in -> dup -> (conv1 -> conv2 | skip) -> add -> pool: the latency takes the slower branch
    cycles = {"dup": 64, "conv1": 300, "conv2": 500, "add": 64, "pool": 100}
    preds = {"conv1": ["dup"], "conv2": ["conv1"], "add": ["conv2", "dup"], "pool": ["add"]}
    perf = pipeline_performance(cycles, 100.0, preds)
    assert perf.steady_state_cycles == 500 and perf.bottleneck == "conv2"
    assert perf.latency_cycles == 64 + 300 + 500 + 64 + 100
    # a skip branch slower than the body: the skip sets the path
    slow_skip = {**cycles, "proj": 2000}
    preds2 = {**preds, "proj": ["dup"], "add": ["conv2", "proj"]}
    assert critical_path_cycles(slow_skip, preds2) == 64 + 2000 + 64 + 100
    # the chain formula (no graph) stays the sum of all
    assert critical_path_cycles(cycles) == sum(cycles.values())


def test_dag_latency_does_not_depend_on_listing_order():
    cycles = {"add": 5, "b": 50, "a": 10, "c": 20}
    preds = {"b": ["a"], "c": ["a"], "add": ["b", "c"]}
    assert topological_order(list(cycles), preds) == ["a", "b", "c", "add"]
    assert critical_path_cycles(cycles, preds) == 65


def test_a_cyclic_graph_is_refused_naming_the_nodes():
    with pytest.raises(ValueError, match="cycle through a, b"):
        critical_path_cycles({"a": 1, "b": 2}, {"a": ["b"], "b": ["a"]})


def residual_model():
    """A FINN graph in -> DuplicateStreams -> (VVAU -> Thresholding | skip) -> ElementwiseAdd."""
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    hls, shape = "finn.custom_op.fpgadataflow.hls", [1, 4, 4, 8]

    def node(op, ins, outs, name, **attrs):
        return helper.make_node(op, ins, outs, domain=hls, name=name, backend="fpgadataflow",
                                **attrs)

    nodes = [
        node("DuplicateStreams_hls", ["inp"], ["d0", "d1"], "dup", NumChannels=8, PE=2,
             NumOutputStreams=2, inputDataType="INT4", numInputVectors=[1, 4, 4]),
        node("VVAU_hls", ["d0", "w"], ["v"], "dw", Channels=8, Kernel=[1, 1], Dim=[4, 4], PE=1,
             SIMD=1, inputDataType="INT4", weightDataType="INT4", outputDataType="INT4",
             accDataType="INT16", noActivation=1),
        node("Thresholding_hls", ["v", "t"], ["r"], "act", NumChannels=8, PE=4, numSteps=1,
             inputDataType="INT4", weightDataType="INT4", outputDataType="INT4",
             numInputVectors=[1, 4, 4]),
        node("ElementwiseAdd_hls", ["r", "d1"], ["outp"], "add", lhs_dtype="INT4",
             rhs_dtype="INT4", out_dtype="INT5", lhs_shape=shape, rhs_shape=shape,
             out_shape=shape, PE=2),
    ]
    graph = helper.make_graph(
        nodes, "residual", [helper.make_tensor_value_info("inp", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("outp", TensorProto.FLOAT, shape)])
    return ModelWrapper(qonnx_make_model(graph))


def test_dag_performance_equals_finn_dataflow_performance():
    from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles

    model = residual_model().transform(AnnotateCycles())
    finn = model.analysis(dataflow_performance)
    cycles = {"dup": 4 * 16, "dw": 8 * 16, "act": 2 * 16, "add": 4 * 16}
    preds = {n.name: [p.name for p in model.find_direct_predecessors(n) or []]
             for n in model.graph.node}
    assert preds["add"] == ["act", "dup"]
    perf = pipeline_performance(cycles, 100.0, preds)
    assert perf.latency_cycles == 64 + 128 + 32 + 64 == finn["critical_path_cycles"]
    assert perf.steady_state_cycles == 128 == finn["max_cycles"]
    # the cost model's per-node cycles for the nodes it reads
    for name in ("dup", "dw"):
        node = model.get_node_from_name(name)
        assert layer_cycles(layer_from_node(node, ZU)) == cycles[name]
