"""Folding optimiser: legality, the resource ceiling's closed form, and FINN's SetFolding as bar."""
import math
import random

import numpy as np
import pytest
from onnx import TensorProto, helper

from hw_models.boards import get_board
from hw_models.calibrate import init_finn
from hw_models.cost import MvauLayer, acc_bits_bound
from hw_models.folding import (
    Budget,
    FoldingError,
    optimise_folding,
    resource_ceiling,
    with_dwc_fifo,
)
from hw_models.rules import mvau_simd_ok

RTL = "finn.custom_op.fpgadataflow.rtl"


@pytest.fixture(scope="module", autouse=True)
def finn(finn_build_dir):
    init_finn()


class Chain:
    """Builds a chain of specialised FINN HW nodes (NHWC tensors t0 -> t1 -> ...)."""

    def __init__(self, h: int, w: int, c: int, bits: int = 8):
        self.shape, self.bits, self.nodes, self.inits = [1, h, w, c], bits, [], {}
        self.dtypes = {"t0": f"UINT{bits}"}
        self.rng = np.random.default_rng(0)

    @property
    def tensor(self) -> str:
        return f"t{len(self.nodes)}"

    def _add(self, op, extra_inputs, out_shape, out_dt, **attrs):
        out = f"t{len(self.nodes) + 1}"
        node = helper.make_node(op, [self.tensor, *extra_inputs], [out], domain=RTL,
                                name=f"{op}_{len(self.nodes)}", backend="fpgadataflow", **attrs)
        self.nodes.append((node, list(out_shape)))
        self.shape, self.dtypes[out] = list(out_shape), out_dt

    def threshold(self, out_bits: int = 4):
        h, w, c = self.shape[1:]
        steps, name = 2 ** out_bits - 1, f"thr{len(self.nodes)}"
        lo, hi = 0, 2 ** min(self.bits, 12) - 1
        thresholds = np.sort(self.rng.integers(lo, hi, (c, steps)), 1)
        self.inits[name] = (thresholds, f"INT{self.bits + 1}")
        self._add("Thresholding_rtl", [name], self.shape, f"UINT{out_bits}", NumChannels=c,
                  PE=1, numSteps=steps, numInputVectors=[1, h, w],
                  inputDataType=f"INT{self.bits}" if self.nodes else f"UINT{self.bits}",
                  weightDataType=f"INT{self.bits + 1}", outputDataType=f"UINT{out_bits}",
                  ActVal=0)
        self.bits = out_bits

    def window(self, k: int, stride: int = 1):
        h, w, c = self.shape[1:]
        oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
        dt = f"UINT{self.bits}"
        self._add("ConvolutionInputGenerator_rtl", [], [1, oh, ow, k * k * c], dt,
                  IFMChannels=c, IFMDim=[h, w], OFMDim=[oh, ow], ConvKernelDim=[k, k],
                  Stride=[stride, stride], Dilation=[1, 1], SIMD=1, depthwise=0,
                  parallel_window=0, inputDataType=dt, outputDataType=dt)

    def mvau(self, mh: int, wbits: int = 4):
        _, h, w, mw = self.shape
        acc = acc_bits_bound(mw, wbits, self.bits, False)
        name = f"w{len(self.nodes)}"
        self.inits[name] = (self.rng.integers(-(2 ** (wbits - 1)), 2 ** (wbits - 1), (mw, mh)),
                            f"INT{wbits}")
        self._add("MVAU_rtl", [name], [1, h, w, mh], f"INT{acc}", MW=mw, MH=mh, SIMD=1, PE=1,
                  numInputVectors=[1, h, w], inputDataType=f"UINT{self.bits}",
                  weightDataType=f"INT{wbits}", accDataType=f"INT{acc}",
                  outputDataType=f"INT{acc}", noActivation=1, binaryXnorMode=0, ActVal=0,
                  mem_mode="internal_decoupled")
        self.bits = acc

    def model(self):
        from qonnx.core.datatype import DataType
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.util.basic import qonnx_make_model

        first = self.nodes[0][0].input[0]
        inp = helper.make_tensor_value_info(first, TensorProto.FLOAT, self._first_shape())
        last = self.nodes[-1]
        outp = helper.make_tensor_value_info(last[0].output[0], TensorProto.FLOAT, last[1])
        vi = [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, s)
              for n, s in self.nodes[:-1]]
        graph = helper.make_graph([n for n, _ in self.nodes], "chain", [inp], [outp],
                                  value_info=vi)
        m = ModelWrapper(qonnx_make_model(graph))
        for t, dt in self.dtypes.items():
            m.set_tensor_datatype(t, DataType[dt])
        for name, (value, dt) in self.inits.items():
            m.set_initializer(name, value.astype(np.float32))
            m.set_tensor_datatype(name, DataType[dt])
        return m

    def _first_shape(self):
        from qonnx.custom_op.registry import getCustomOp

        return list(getCustomOp(self.nodes[0][0]).get_normal_input_shape())


def small_cnn(c_in=3, hw=10, chans=(8, 16), classes=10):
    ch = Chain(hw, hw, c_in)
    ch.threshold(4)
    for c in chans:
        ch.window(3)
        ch.mvau(c)
        ch.threshold(4)
    ch.window(ch.shape[1])  # the last convolution covers the whole map: a classifier
    ch.mvau(classes)
    return ch.model()


def attrs(model):
    from qonnx.custom_op.registry import getCustomOp

    return [(n, getCustomOp(n)) for n in model.graph.node]


def assert_legal(model):
    """FINN's divisibility rules, densiflow's MVAU rule and integer-ratio stream edges."""
    nodes = attrs(model)
    for (prev, pi), (node, inst) in zip([(None, None)] + nodes[:-1], nodes):
        g = inst.get_nodeattr
        if node.op_type == "MVAU_rtl":
            in_simd = pi.get_folded_output_shape()[-1] if prev is not None else None
            assert mvau_simd_ok(g("MW"), g("SIMD"), in_simd), node.name
            assert g("MH") % g("PE") == 0
        if node.op_type == "Thresholding_rtl":
            assert g("NumChannels") % g("PE") == 0
        if node.op_type == "ConvolutionInputGenerator_rtl":
            assert g("IFMChannels") % g("SIMD") == 0
            assert not g("parallel_window") or g("SIMD") == g("IFMChannels")
        if prev is not None:
            a, b = pi.get_outstream_width(), inst.get_instream_width()
            assert max(a, b) % min(a, b) == 0, (prev.name, node.name, a, b)


@pytest.mark.parametrize("seed", range(6))
def test_optimiser_never_chooses_illegal_folding(seed):
    rng = random.Random(seed)
    model = small_cnn(c_in=rng.choice((1, 3, 4)), hw=rng.choice((6, 8, 10)),
                      chans=tuple(rng.choice((6, 8, 12, 16)) for _ in range(rng.randint(1, 2))))
    budget = Budget(lut=rng.choice((0.05, 1.0)), dsp=rng.choice((0.02, 0.2, 1.0)))
    board = rng.choice(("pynq-z1", "zcu104"))
    folded, report = optimise_folding(model, board, rng.choice((1e4, 1e5, 1e6)), budget,
                                      objective=rng.choice(("target", "max_fps")),
                                      compare_with_finn=False)
    assert_legal(folded)
    assert report.cost_model.fits
    caps = budget.caps(get_board(board))
    assert all(report.cost_model.resources.get(r) <= caps[r] for r in caps)
    with_dwc_fifo(folded, get_board(board).part)  # FINN accepts the folding


def test_ceiling_closed_form_on_one_layer():
    layer = MvauLayer(mw=16, mh=8, vectors=4, weight_bits=4, input_bits=4)
    board = get_board("zcu104")
    budget = Budget(dsp=0.01, lut=0.01)
    ceiling = resource_ceiling([layer], board, budget, clock_mhz=200)
    macs = 16 * 8 * 4
    # RTL MVAU on DSP48E2: ceil(PE/4) * SIMD DSPs, i.e. 1/4 DSP per MAC (FINN's estimate)
    assert ceiling.dsp_per_mac == pytest.approx(0.25)
    assert ceiling.fps == pytest.approx(200e6 * 0.01 * board.dsp / (macs * 0.25))
    # a LUT multiplier lane (HLS, resType lut) at W4A4: 1.1 * ((2*ceil(8/6)-1)*8 + 2*8) LUTs
    assert ceiling.lut_per_mac == pytest.approx(1.1 * ((2 * math.ceil(8 / 6) - 1) * 8 + 2 * 8),
                                                rel=0.01)
    pooled = 0.01 * board.dsp / 0.25 + 0.01 * board.lut / ceiling.lut_per_mac
    assert ceiling.fps_any_multiplier == pytest.approx(200e6 * pooled / macs)


def test_as_fast_as_setfolding_within_its_resources():
    model = small_cnn(c_in=3, hw=10, chans=(8, 16))
    board = get_board("pynq-z1")
    target = 2e5
    _, probe = optimise_folding(model, board, target, compare_with_finn=True)
    setf = probe.setfolding
    cap = board.capacity()
    budget = Budget(**{r: min(1.0, max(setf.resources.get(r), 1) / cap.get(r))
                       for r in ("lut", "bram18", "dsp")})
    _, report = optimise_folding(model, board, target, budget, objective="max_fps")
    assert report.finn.fps >= setf.fps
    for r in ("lut", "bram18", "dsp"):
        assert report.finn.resources.get(r) <= max(setf.resources.get(r), 1)
    assert report.finn.cycles == report.cost_model.cycles  # FINN agrees on the bottleneck


def test_infeasible_budget_names_the_resource():
    model = small_cnn(c_in=3, hw=8, chans=(8,))
    with pytest.raises(FoldingError, match="too much"):
        optimise_folding(model, "pynq-z1", 1e5, Budget(bram18=0.001, lut=0.001),
                         compare_with_finn=False)


# ------------------------------------------------------------ the Yosys calibration's view


def dwc_lut(cal, in_width: int, out_width: int) -> float:
    """LUTs of a width converter from the calibration's coefficients and vpc's closed form.

    dwc_axi hands vpc N = IBITS*OBITS, so every converter with IBITS != OBITS takes vpc's
    generic branch: a (PI0 + PO0)-word buffer of g = gcd bits, and where PO0 is no multiple of
    PI0 a PI0-way barrel rotator (PI0 positions x g bits x a PI0:1 mux, 4 inputs per LUT6).
    """
    if in_width == out_width:
        return 0.0
    g = math.gcd(in_width, out_width)
    pi0, po0 = in_width // g, out_width // g
    rotating = pi0 > 1 and po0 % pi0 != 0
    c = cal.coefficients["StreamingDataWidthConverter_rtl"]["lut"]
    return (c.get("const", 0) + c.get("buffer_bits", 0) * (in_width + out_width)
            + rotating * (c.get("barrel", 0) * in_width * math.ceil(pi0 / 4)
                          + c.get("barrel_bits", 0) * in_width))


def fc_tail():
    """An MVAU of 512 inputs x 64 outputs (digits' classifier input) and its Thresholding."""
    ch = Chain(1, 1, 512, bits=4)
    ch.mvau(64)
    ch.threshold(4)
    return ch.model()


def test_yosys_calibrated_optimiser_rejects_costlier_converters():
    """At a target the MVAU meets only with SIMD * PE >= 1024 lanes, the Thresholding may take
    any PE that meets the target. Under the Yosys calibration the chosen PE costs no more than
    any other (its LUTs, the converter in vpc's closed form and the FIFOs beside it, weighted by
    the board as the optimiser weighs them); FINN's calibration (a converter is a few LUTs)
    picks a narrower Thresholding behind a converter synthesis counts as costlier."""
    from qonnx.custom_op.registry import getCustomOp

    from hw_models.cost import (
        FifoLayer,
        estimate,
        layer_from_node,
        load_calibration,
        synthesis_calibration,
    )
    from hw_models.rules import DEFAULT_FIFO_DEPTH

    cal = synthesis_calibration("xc7")
    assert cal is not None, "hw_models/calibration/yosys_xc7.json is missing"
    model, board = fc_tail(), get_board("pynq-z1")
    target_cycles = 512 * 64 // 1024
    fps = board.clock_mhz * 1e6 / target_cycles
    caps = Budget().caps(board)

    def pick(calibration):
        folded, _ = optimise_folding(model, board, fps, calibration=calibration,
                                     compare_with_finn=False)
        mvau_node, thr_node = folded.graph.node
        thr = getCustomOp(thr_node)
        return (getCustomOp(mvau_node).get_outstream_width(), thr.get_nodeattr("PE"),
                layer_from_node(thr_node, board.part), thr.get_input_datatype().bitwidth())

    mvau_out, pe, thr, in_bits = pick(cal)

    def cost(p: int) -> float:
        fifo = [FifoLayer(depth=DEFAULT_FIFO_DEPTH, width=p * 4)]
        if p * in_bits != mvau_out:
            fifo.append(FifoLayer(depth=DEFAULT_FIFO_DEPTH, width=p * in_bits))
        res = [estimate(x, cal).resources for x in [thr.model_copy(update={"pe": p}), *fifo]]
        lut = sum(r.lut for r in res) + dwc_lut(cal, mvau_out, p * in_bits)
        return lut / caps["lut"] + sum(r.bram18 for r in res) / caps["bram18"]

    options = [p for p in range(1, 65) if 64 % p == 0 and 64 // p <= target_cycles]
    assert pe in options and all(cost(pe) <= cost(p) + 1e-9 for p in options), (
        pe, {p: cost(p) for p in options})
    finn_out, finn_pe, _, _ = pick(load_calibration())
    assert (finn_out, finn_pe) != (mvau_out, pe)  # the calibrations disagree here
    assert dwc_lut(cal, finn_out, finn_pe * in_bits) > dwc_lut(cal, mvau_out, pe * in_bits)


@pytest.mark.parametrize("n,expected", [(1, [1]), (12, [1, 2, 3, 4, 6, 12]), (13, [1, 13]),
                                        (36, [1, 2, 3, 4, 6, 9, 12, 18, 36])])
def test_divisors_are_the_legal_foldings_of_a_dimension(n, expected):
    from hw_models.rules import divisors

    assert divisors(n) == expected
