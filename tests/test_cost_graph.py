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


VERSAL = "xcve2802-vsvh1760-2MP-e-S"


@pytest.mark.parametrize("part, dsps", [(VERSAL, 8 * math.ceil(9 / 3)), (ZU, 8 * 9)])
def test_vvau_cycles_and_dsps_closed_form_match_finn(part, dsps):
    # (channels / PE) * (k*k / SIMD) * H * W; DSP58 (Versal): PE * ceil(SIMD / 3), FINN's;
    # elsewhere the behavioural multipliers, one DSP48 per product (hw_models.finn_ops.vvau)
    node = vvau_node(ch=32, k=3, dim=7, pe=8, simd=9)
    layer = layer_from_node(node, part)
    assert isinstance(layer, VvauLayer) and layer.node_type == "VVAU_rtl"
    ref, cycles = finn_estimate(node, part)
    assert layer_cycles(layer) == (32 // 8) * (9 // 9) * 7 * 7 == cycles == 196
    assert estimate(layer).resources.dsp == dsps == ref.dsp


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


def test_model_cost_latency_follows_the_graph():
    _needs_densiflow_ops()
    from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles

    from hw_models.cost import model_cost

    model = residual_block()
    cost = model_cost(model, ZU)
    finn = model.transform(AnnotateCycles()).analysis(dataflow_performance)
    assert cost.latency_cycles == finn["critical_path_cycles"]
    assert cost.max_cycles == finn["max_cycles"]


# ----------------------------------------------------------------------------- folding on a DAG

RTL, HLS = "finn.custom_op.fpgadataflow.rtl", "finn.custom_op.fpgadataflow.hls"


class Graph:
    """Builds a FINN dataflow graph of specialised HW nodes on named NHWC tensors."""

    def __init__(self):
        import numpy as np

        self.nodes, self.shapes, self.dtypes, self.inits = [], {}, {}, {}
        self.rng = np.random.default_rng(0)

    def tensor(self, name, shape, dt):
        self.shapes[name], self.dtypes[name] = list(shape), dt
        return name

    def node(self, op, ins, outs, **attrs):
        from onnx import helper

        domain = RTL if op.endswith("_rtl") else HLS
        self.nodes.append(helper.make_node(op, ins, outs, domain=domain,
                                           name=f"{op}_{len(self.nodes)}",
                                           backend="fpgadataflow", **attrs))

    def init(self, name, value, dt):
        self.inits[name] = (value, dt)
        return name

    def model(self, inp, outp):
        import numpy as np
        from onnx import TensorProto, helper
        from qonnx.core.datatype import DataType
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.util.basic import qonnx_make_model

        vi = {t: helper.make_tensor_value_info(t, TensorProto.FLOAT, s)
              for t, s in self.shapes.items()}
        graph = helper.make_graph(self.nodes, "g", [vi[inp]], [vi[outp]],
                                  value_info=[v for t, v in vi.items() if t not in (inp, outp)])
        m = ModelWrapper(qonnx_make_model(graph))
        for t, dt in self.dtypes.items():
            m.set_tensor_datatype(t, DataType[dt])
        for t, (value, dt) in self.inits.items():
            m.set_initializer(t, value.astype(np.float32))
            m.set_tensor_datatype(t, DataType[dt])
        return m


def residual_block(c=8, hw=4):
    """in -> DuplicateStreams -> (FMPadding -> depthwise SWG 3x3 -> VVAU -> Thresholding | skip)
    -> AddStreams -> depthwise SWG 2x2/2 -> Pool (max) -> GlobalAccPool: every graph kind."""
    import numpy as np

    g = Graph()
    x = g.tensor("x", [1, hw, hw, c], "UINT4")
    d0, d1 = g.tensor("d0", [1, hw, hw, c], "UINT4"), g.tensor("d1", [1, hw, hw, c], "UINT4")
    g.node("DuplicateStreams_rtl", [x], [d0, d1], NumChannels=c, PE=1, NumOutputStreams=2,
           inputDataType="UINT4", numInputVectors=[1, hw, hw])
    p = g.tensor("pad", [1, hw + 2, hw + 2, c], "UINT4")
    g.node("FMPadding_rtl", [d0], [p], ImgDim=[hw, hw], Padding=[1, 1, 1, 1], NumChannels=c,
           SIMD=1, inputDataType="UINT4", numInputVectors=1)
    win = g.tensor("win", [1, hw, hw, 9 * c], "UINT4")
    g.node("ConvolutionInputGenerator_rtl", [p], [win], IFMChannels=c, IFMDim=[hw + 2] * 2,
           OFMDim=[hw, hw], ConvKernelDim=[3, 3], Stride=[1, 1], Dilation=[1, 1], SIMD=1,
           depthwise=1, parallel_window=0, inputDataType="UINT4", outputDataType="UINT4")
    w = g.init("w", g.rng.integers(-7, 8, (c, 1, 3, 3)), "INT4")
    acc = g.tensor("acc", [1, hw, hw, c], "INT12")
    g.node("VVAU_hls", [win, w], [acc], Channels=c, Kernel=[3, 3], Dim=[hw, hw], PE=1, SIMD=1,
           inputDataType="UINT4", weightDataType="INT4", outputDataType="INT12",
           accDataType="INT12", noActivation=1, ActVal=0, resType="lut",
           mem_mode="internal_decoupled")
    t = g.init("t", np.sort(g.rng.integers(-64, 64, (c, 15)), 1), "INT12")
    r = g.tensor("r", [1, hw, hw, c], "UINT4")
    g.node("Thresholding_rtl", [acc, t], [r], NumChannels=c, PE=1, numSteps=15,
           numInputVectors=[1, hw, hw], inputDataType="INT12", weightDataType="INT12",
           outputDataType="UINT4", ActVal=0)
    s = g.tensor("sum", [1, hw, hw, c], "UINT5")
    g.node("AddStreams_rtl", [r, d1], [s], NumChannels=c, PE=1,
           inputDataTypes=["UINT4", "UINT4"], numInputVectors=[1, hw, hw])
    o = hw // 2
    pw = g.tensor("pwin", [1, o, o, 4 * c], "UINT5")
    g.node("ConvolutionInputGenerator_rtl", [s], [pw], IFMChannels=c, IFMDim=[hw, hw],
           OFMDim=[o, o], ConvKernelDim=[2, 2], Stride=[2, 2], Dilation=[1, 1], SIMD=1,
           depthwise=1, parallel_window=0, inputDataType="UINT5", outputDataType="UINT5")
    pool = g.tensor("pool", [1, o, o, c], "UINT5")
    g.node("Pool_rtl", [pw], [pool], Channels=c, PE=1, KernelSize=[2, 2], Function="MaxPool",
           OutImgDims=[o, o], InputDataType="UINT5", OutputDataType="UINT5", BatchSize=1)
    gap = g.tensor("gap", [1, 1, 1, c], "UINT7")
    g.node("GlobalAccPool_rtl", [pool], [gap], NumChannels=c, PE=1, inputDataType="UINT5",
           numInputVectors=[1, o, o])
    return g.model(x, gap)


def _needs_densiflow_ops():
    missing = [op for op in DENSIFLOW_OPS if not _registered(op)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not registered by hw_models.finn_ops yet")


def _edges(model):
    """(producer, consumer, input index) of every stream edge between nodes."""
    out = []
    for node in model.graph.node:
        for k, tensor in enumerate(node.input):
            prod = model.find_producer(tensor)
            if prod is not None:
                out.append((prod, node, k))
    return out


def assert_graph_legal(model):
    """Each node's own checks, the depthwise word layout and integer-ratio edges."""
    from qonnx.custom_op.registry import getCustomOp

    for node in model.graph.node:
        inst = getCustomOp(node)
        inst.verify_node()  # densiflow's ops raise on an illegal folding; FINN's assert below
        inst.get_folded_input_shape(0), inst.get_folded_output_shape(0)
        types = inst.get_nodeattr_types()
        for attr, dim in (("PE", "NumChannels"), ("PE", "Channels"), ("SIMD", "IFMChannels"),
                          ("SIMD", "NumChannels")):
            if dim in types and attr in types:
                assert inst.get_nodeattr(dim) % inst.get_nodeattr(attr) == 0, node.name
        if node.op_type.startswith("VVAU"):
            k = math.prod(inst.get_nodeattr("Kernel"))
            assert k % inst.get_nodeattr("SIMD") == 0
    for prod, node, k in _edges(model):
        p, c = getCustomOp(prod), getCustomOp(node)
        if prod.op_type.startswith("ConvolutionInputGenerator") and p.get_nodeattr("depthwise"):
            # FINN's SetFolding rule: the depthwise SWG's SIMD is its consumer's PE
            assert p.get_nodeattr("SIMD") == c.get_nodeattr("PE"), (prod.name, node.name)
            whole = node.op_type.startswith("VVAU") and c.get_nodeattr("SIMD") > 1
            assert bool(p.get_nodeattr("parallel_window")) == whole
        a, b = p.get_outstream_width(), c.get_instream_width(k)
        assert max(a, b) % min(a, b) == 0, (prod.name, node.name, a, b)


@pytest.mark.parametrize("fps", [2e5, 1e6, 5e6, 5e7])
def test_optimiser_folds_a_residual_graph_legally(fps):
    _needs_densiflow_ops()
    from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles

    from hw_models.folding import optimise_folding, with_dwc_fifo

    model = residual_block()
    folded, report = optimise_folding(model, "zcu104", fps, compare_with_finn=False)
    assert_graph_legal(folded)
    assert report.cost_model.fits
    # the optimiser's cycles are FINN's (and densiflow's ops') own get_exp_cycles
    finn = folded.transform(AnnotateCycles()).analysis(dataflow_performance)
    assert finn["max_cycles"] == report.cost_model.cycles
    target = int(200e6 / fps)
    floor = max(min(c for c in _all_cycles(model, n)) for n in model.graph.node)
    assert report.cost_model.cycles <= max(target, floor)
    full = with_dwc_fifo(folded, get_board_part())  # FINN's passes accept it
    # both branches of the fork reach the add at its PE: no converter in front of the add
    add = next(n for n in full.graph.node if n.op_type == "AddStreams_rtl")
    feeding = [full.find_producer(t).op_type for t in add.input]
    assert not any(op.startswith("StreamingDataWidthConverter") for op in feeding), feeding


def get_board_part():
    from hw_models.boards import get_board

    return get_board("zcu104").part


def _all_cycles(model, node):
    """FINN's get_exp_cycles of every legal PE (and SIMD) of one node, for the floor."""
    from qonnx.custom_op.registry import getCustomOp

    from hw_models.rules import divisors

    inst = getCustomOp(node)
    types = inst.get_nodeattr_types()
    dims = {"PE": next((d for d in ("NumChannels", "Channels") if d in types), None),
            "SIMD": next((d for d in ("IFMChannels", "NumChannels") if d in types), None)}
    if node.op_type.startswith("VVAU"):
        dims["SIMD"] = None
    values = []
    for attr, dim in dims.items():
        if attr in types and dim is not None:
            for v in divisors(inst.get_nodeattr(dim)):
                inst.set_nodeattr(attr, v)
                values.append(int(inst.get_exp_cycles()))
    return values or [int(inst.get_exp_cycles())]


@pytest.mark.parametrize("target", [40, 150])
def test_setfolding_view_folds_densiflow_ops_as_their_hls_twins(target):
    """FINN's SetFolding names only the HLS Pool/GlobalAccPool/DuplicateStreams; the view folds
    densiflow's RTL ops by the same rules: legal, names kept, every node at the target where it
    can be, and the optimiser (cost model) at least as fast."""
    _needs_densiflow_ops()
    from qonnx.custom_op.registry import getCustomOp

    from hw_models.folding import finn_setfolding, optimise_folding

    model = residual_block()
    folded = finn_setfolding(model, target)
    assert [n.name for n in folded.graph.node] == [n.name for n in model.graph.node]
    assert [n.op_type for n in folded.graph.node] == [n.op_type for n in model.graph.node]
    assert_graph_legal(folded)
    from hw_models.rules import divisors

    cycles = {n.name: int(getCustomOp(n).get_exp_cycles()) for n in folded.graph.node}
    for op in ("DuplicateStreams_rtl", "AddStreams_rtl", "Pool_rtl", "GlobalAccPool_rtl"):
        node = next(n for n in folded.graph.node if n.op_type == op)
        assert cycles[node.name] <= target, op
        if op in ("DuplicateStreams_rtl", "AddStreams_rtl"):  # SetFolding's PE rule: smallest
            inst = getCustomOp(node)
            pe = inst.get_nodeattr("PE")
            smaller = [d for d in divisors(inst.get_nodeattr("NumChannels")) if d < pe]
            if smaller:
                inst.set_nodeattr("PE", smaller[-1])
                assert inst.get_exp_cycles() > target, op
    _, report = optimise_folding(model, "zcu104", 200e6 / target, compare_with_finn=False)
    assert report.cost_model.cycles <= max(cycles.values())


# ----------------------------------------------------------------------------- Yosys calibration

GRAPH_KINDS = ("VVAU_rtl", "Pool_rtl", "GlobalAccPool_rtl", "DuplicateStreams_rtl",
               "AddStreams_rtl")


def test_stored_yosys_calibration_has_the_graph_kinds_with_their_held_out_error():
    from hw_models.cost import synthesis_calibration

    cal = synthesis_calibration("xc7")
    for kind in GRAPH_KINDS:
        assert cal.coefficients[kind]["lut"], kind
        loo = cal.held_out[kind]["lut"]  # the stated error on nodes the fit has not seen
        assert loo.samples >= 4 and loo.median_rel_error < 0.15, (kind, loo)
    # DSPs of the RTL VVAU: about one per product on xc7 (behavioural multipliers; Yosys maps
    # some narrow products to LUTs, so the fit says how far)
    layer = layer_from_node(vvau_node(ch=32, k=3, dim=4, pe=8, simd=9), Z7)
    dsp = estimate(layer, cal).resources.dsp
    assert abs(dsp - 8 * 9) <= cal.held_out["VVAU_rtl"]["dsp"].worst_rel_error * 8 * 9


@pytest.mark.synth
def test_yosys_calibration_prices_held_out_graph_nodes(tmp_path):
    """Nodes not in the calibration sweep: the Yosys-calibrated estimate within 15 % of Yosys."""
    _needs_densiflow_ops()
    import hw_models.calibrate as c
    from hw_models.cost import synthesis_calibration

    cal = synthesis_calibration("xc7")
    nodes = [(c.yosys_add_streams, (32, 8, 2, 6, 6)), (c.yosys_pool, (16, 8, 2, 2, 6)),
             (c.yosys_global_acc_pool, (32, 8, 4, 6))]
    samples = c.yosys_samples("xc7", tmp_path / "work", tmp_path / "cache", nodes=nodes)
    for s in samples:
        got = estimate(s.layer, cal).resources.lut
        assert got == pytest.approx(s.resources.lut, rel=0.15), s.layer.node_type


@pytest.mark.parametrize("window, channels, simd, pe, expected", [
    (9, 8, 1, 2, (1, 2)),  # allowed: unchanged
    (9, 8, 3, 4, (3, 4)),
    (9, 8, 9, 1, (3, 4)),  # the whole window per cycle: SIMD 3, PE up to keep 9 lanes (12)
    (9, 8, 9, 8, (3, 8)),  # no PE is wide enough: all channels
    (4, 6, 4, 3, (2, 6)),
])
def test_rtl_vvau_never_takes_the_whole_window_per_cycle(window, channels, simd, pe, expected):
    """finn-rtllib's mvu_vvu_axi overflows its output queue with SIMD == MW (found on
    digits_mobilenet's VVAUs in Verilator): the RTL VVAU keeps k*k/SIMD >= 2."""
    from hw_models.folding.choices import _vvau_options
    from hw_models.rules import vvau_rtl_folding

    assert vvau_rtl_folding(window, channels, simd, pe) == expected
    k = math.isqrt(window)  # square kernels
    layer = VvauLayer(channels=channels, kernel=(k, k), dim=(4, 4), weight_bits=4, input_bits=4)
    simds = {attrs["SIMD"] for attrs, _, _ in _vvau_options(layer)}
    assert window not in simds and simds == {s for s in range(1, window) if window % s == 0
                                             and window // s >= 2}
    hls = {a["SIMD"] for a, _, _ in _vvau_options(layer.model_copy(update={"impl": "hls"}))}
    assert window in hls  # the HLS VVAU has no such queue
