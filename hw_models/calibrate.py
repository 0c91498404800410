"""Fit the cost model's coefficients to FINN's estimates or to Yosys synthesis of real FINN nodes.

    python -m hw_models.calibrate [--samples N] [--seed S]            # FINN's estimate
    python -m hw_models.calibrate --source yosys --family xc7 [--design MODEL.onnx ...]
    python -m hw_models.calibrate --source yosys --family xc7 --graph-ops

FINN's estimate: each sample is one specialised FINN node (MVAU_rtl/_hls, Thresholding_rtl/_hls,
ConvolutionInputGenerator_rtl, FMPadding_rtl, StreamingDataWidthConverter_rtl/_hls,
StreamingFIFO_rtl, Pool_hls, LabelSelect_hls; and, from a random stream of their own, the kinds
graph networks add: VVAU_rtl/_hls and densiflow's Pool_rtl, GlobalAccPool_rtl,
DuplicateStreams_rtl, AddStreams_rtl, whose estimates are their own *_estimation methods) with
random legal geometry, bit-widths, folding and memory styles, built with onnx helpers and
estimated by FINN's `node_res_estimation` on a 7-series (xc7z020) and an UltraScale+ (xczu7ev)
part; written to calibration/finn_estimate.json.

Yosys: a fixed sweep of single RTL nodes (YOSYS_SWEEP: width converters with integer and
fractional ratios both ways, FIFOs of each storage style, MVAUs, Thresholdings, sliding windows,
paddings), plus every node of the folded dataflow models given with --design, get their HDL
generated for the family's part and are synthesised by hw_models.synth one Yosys process at a
time (per-node cache: --cache, else $DENSIFLOW_SYNTH_CACHE, else build/out/synth_cache). The fit
also measures each node type's leave-one-out error; written to calibration/yosys_<family>.json.
--graph-ops synthesises only the kinds graph networks add (YOSYS_GRAPH_SWEEP: densiflow's
Pool_rtl, GlobalAccPool_rtl, DuplicateStreams_rtl, AddStreams_rtl, and VVAU_rtl: off Versal with
behavioural multipliers Yosys maps to DSP48s, or, where its HDL is Versal's, its DSP58s kept as
blackboxes and counted as DSPs) and adds their fit to the stored file (about 12 s a node cold).
Cold, the xc7 sweep and the digits design (105 nodes) take about 11 minutes on one core; from the
cache about 4 s.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import random
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from hw_models.cost import (
    Calibration,
    CalibrationSample,
    acc_bits_bound,
    calibration_path,
    fit_calibration,
    layer_from_node,
)
from hw_models.resources import Resources, ResourceSource
from hw_models.rules import divisors

log = logging.getLogger(__name__)

PARTS = ("xc7z020clg400-1", "xczu7ev-ffvc1156-2-e")
RTL, HLS = "finn.custom_op.fpgadataflow.rtl", "finn.custom_op.fpgadataflow.hls"


def init_finn() -> None:
    """Dummy FINN settings and a build folder, as every FINN transformation needs."""
    import finn.custom_op.fpgadataflow.hls
    import finn.custom_op.fpgadataflow.rtl  # noqa: F401
    from finn.util.settings import initialize_dummy_settings

    import hw_models.finn_ops  # noqa: F401 - densiflow's RTL ops in FINN's registries

    if not os.environ.get("FINN_BUILD_DIR"):
        os.environ["FINN_BUILD_DIR"] = tempfile.mkdtemp(prefix="finn_build_")
    initialize_dummy_settings()


def finn_node(op_type: str, **attrs):
    """One specialised FINN HW node (op_type ends in _rtl or _hls) with the given attributes."""
    from onnx import helper

    domain = RTL if op_type.endswith("_rtl") else HLS
    return helper.make_node(op_type, ["inp"], ["outp"], domain=domain, name=f"{op_type}_0",
                            backend="fpgadataflow", **attrs)


def finn_estimate(node, part: str) -> tuple[Resources, int]:
    """FINN's resource estimate and expected cycles of one node."""
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    r = inst.node_res_estimation(part)
    return (Resources(lut=r["LUT"], bram18=r["BRAM_18K"], uram=r["URAM"], dsp=r["DSP"]),
            int(inst.get_exp_cycles()))


# ----------------------------------------------------------------------------- random nodes


def _divisor(rng: random.Random, n: int) -> int:
    return rng.choice(divisors(n))


def _int(bits: int, signed: bool = True) -> str:
    return f"{'INT' if signed else 'UINT'}{bits}"


def _acc(rng: random.Random, mw: int, w: int, a: int) -> str:
    return _int(max(2, acc_bits_bound(mw, w, a, False) - rng.choice((0, 0, 1, 3))))


def random_mvau(rng: random.Random, impl: str):
    """An MVAU with random geometry, bits, folding and memory style."""
    mw = rng.choice((8, 9, 16, 27, 32, 64, 72, 144, 256, 288, 576, 1152, 2304))
    mh = rng.choice((10, 16, 32, 64, 128, 256, 512))
    w, a = rng.randint(2, 8), rng.randint(2, 8)
    attrs = dict(MW=mw, MH=mh, SIMD=_divisor(rng, mw), PE=_divisor(rng, mh),
                 numInputVectors=[1, rng.choice((1, 3, 5, 11, 28, 30)), rng.choice((1, 5, 30))],
                 weightDataType=_int(w), inputDataType=_int(a, rng.random() < 0.3),
                 accDataType=_acc(rng, mw, w, a), outputDataType=_acc(rng, mw, w, a),
                 noActivation=1, binaryXnorMode=0, ActVal=0,
                 mem_mode=rng.choice(("internal_decoupled",) * 4 + ("internal_embedded",)),
                 ram_style=rng.choice(("auto", "block", "distributed", "ultra")))
    if impl == "hls":
        if rng.random() < 0.3:
            attrs.update(weightDataType="BIPOLAR", inputDataType="BIPOLAR", binaryXnorMode=1)
        ob = rng.randint(1, 4)
        if rng.random() < 0.5:
            attrs.update(noActivation=0, outputDataType=_int(ob, False),
                         ram_style_thresholds=rng.choice(("auto", "block", "distributed")))
        attrs["resType"] = rng.choice(("lut", "lut", "dsp"))
    else:
        attrs["mem_mode"] = "internal_decoupled"
    return finn_node(f"MVAU_{impl}", **attrs)


def random_thresholding(rng: random.Random, impl: str):
    """A Thresholding layer with random channels, bits and folding."""
    ch = rng.choice((3, 10, 16, 32, 64, 128, 256, 512))
    ob = rng.randint(1, 8)
    attrs = dict(NumChannels=ch, PE=_divisor(rng, ch), numSteps=2 ** ob - 1,
                 numInputVectors=[1, rng.choice((1, 4, 13, 30)), rng.choice((1, 13, 30))],
                 inputDataType=_int(rng.randint(4, 24)), weightDataType=_int(rng.randint(4, 24)),
                 outputDataType=_int(ob, False), ActVal=0)
    if impl == "hls":
        attrs["ram_style"] = rng.choice(("distributed", "block", "ultra"))
        attrs["mem_mode"] = "internal_decoupled"
    return finn_node(f"Thresholding_{impl}", **attrs)


def random_swg(rng: random.Random, impl: str = "rtl"):
    """A non-depthwise 2D sliding window with random geometry, SIMD and buffer style."""
    ch = rng.choice((1, 3, 16, 32, 64, 128, 256))
    k = rng.choice((1, 2, 3, 3, 4, 5))
    s = rng.choice((1, 1, 2))
    dim = rng.choice((4, 6, 8, 11, 13, 28, 32))
    dim = max(dim, k)
    odim = (dim - k) // s + 1
    parallel = rng.random() < 0.25
    simd = ch if parallel or k == 1 and rng.random() < 0.5 else _divisor(rng, ch)
    bits = rng.randint(1, 8)
    return finn_node(
        "ConvolutionInputGenerator_rtl", IFMChannels=ch, IFMDim=[dim, dim], OFMDim=[odim, odim],
        ConvKernelDim=[k, k], Stride=[s, s], Dilation=[1, 1], SIMD=simd, depthwise=0,
        parallel_window=int(parallel), inputDataType=_int(bits, False),
        outputDataType=_int(bits, False),
        ram_style=rng.choice(("distributed", "distributed", "auto", "block", "ultra")))


def random_padding(rng: random.Random, impl: str = "rtl"):
    ch = rng.choice((1, 3, 16, 64))
    return finn_node("FMPadding_rtl", ImgDim=[8, 8], Padding=[1, 1, 1, 1], NumChannels=ch,
                     SIMD=_divisor(rng, ch), inputDataType=_int(rng.randint(2, 8), False),
                     numInputVectors=1)


def random_dwc(rng: random.Random, impl: str):
    """A width converter between random stream widths of one element type."""
    bits = rng.randint(1, 24)
    ch = rng.choice((16, 27, 64, 72, 144, 256, 576))
    a, b = _divisor(rng, ch), _divisor(rng, ch)
    if a == b:
        b = ch
    return finn_node(f"StreamingDataWidthConverter_{impl}", dataType=_int(bits), inShape=[1, ch],
                     outShape=[1, ch], inWidth=a * bits, outWidth=b * bits)


def random_fifo(rng: random.Random, impl: str = "rtl"):
    """A FIFO of random depth and width."""
    bits, elems = rng.randint(1, 24), rng.choice((1, 2, 3, 8, 16, 64))
    depth = rng.choice((2, 16, 32, 32, 64, 128, 256, 1024))
    return finn_node("StreamingFIFO_rtl", depth=depth, folded_shape=[1, 10, elems],
                     normal_shape=[1, 10 * elems], dataType=_int(bits),
                     ram_style=rng.choice(("auto", "auto", "distributed", "block")))


def random_pool(rng: random.Random, impl: str = "hls"):
    ch = rng.choice((16, 64, 128))
    return finn_node("Pool_hls", Channels=ch, PE=_divisor(rng, ch), KernelSize=[2, 2],
                     Function="MaxPool", OutImgDims=[rng.choice((4, 8, 14))] * 2,
                     InputDataType=_int(rng.randint(2, 8), False),
                     OutputDataType=_int(rng.randint(2, 8), False), BatchSize=1)


def random_vvau(rng: random.Random, impl: str):
    """A depthwise VVAU with random channels, kernel, image, bits, folding and memory style."""
    ch = rng.choice((8, 16, 32, 64, 96, 128, 256, 512))
    k = rng.choice((1, 3, 3, 5, 7))
    w, a = rng.randint(2, 8), rng.randint(2, 8)
    attrs = dict(Channels=ch, Kernel=[k, k], Dim=[rng.choice((1, 4, 7, 14, 28))] * 2,
                 PE=_divisor(rng, ch), SIMD=_divisor(rng, k * k), weightDataType=_int(w),
                 inputDataType=_int(a, rng.random() < 0.3), accDataType=_acc(rng, k * k, w, a),
                 outputDataType=_acc(rng, k * k, w, a), noActivation=1, ActVal=0,
                 mem_mode=rng.choice(("internal_decoupled",) * 4 + ("internal_embedded",)),
                 ram_style=rng.choice(("auto", "block", "distributed", "ultra")),
                 resType="dsp" if impl == "rtl" else rng.choice(("auto", "lut", "dsp")))
    if impl == "hls" and rng.random() < 0.5:
        attrs.update(noActivation=0, outputDataType=_int(rng.randint(1, 4), False))
    if impl == "rtl":
        attrs["mem_mode"] = "internal_decoupled"
    return finn_node(f"VVAU_{impl}", **attrs)


def random_pool_rtl(rng: random.Random, impl: str = "rtl"):
    """densiflow's Pool_rtl: max or sum (AccPool) over a random window, channels and folding."""
    ch, k, fxn = rng.choice((8, 16, 32, 64, 128)), rng.choice((2, 3)), rng.choice(
        ("MaxPool", "MaxPool", "AccPool"))
    idt = _int(rng.randint(2, 8), False)
    odt = idt if fxn == "MaxPool" else "UINT16"
    return finn_node("Pool_rtl", Channels=ch, PE=_divisor(rng, ch), KernelSize=[k, k],
                     Function=fxn, OutImgDims=[rng.choice((1, 2, 4, 7))] * 2, InputDataType=idt,
                     OutputDataType=odt, BatchSize=1)


def random_global_acc_pool(rng: random.Random, impl: str = "rtl"):
    ch, dim = rng.choice((8, 16, 32, 64, 128, 256)), rng.choice((1, 2, 4, 7, 8))
    return finn_node("GlobalAccPool_rtl", NumChannels=ch, PE=_divisor(rng, ch),
                     inputDataType=_int(rng.randint(2, 8), rng.random() < 0.5),
                     numInputVectors=[1, dim, dim])


def random_duplicate_streams(rng: random.Random, impl: str = "rtl"):
    ch, dim = rng.choice((8, 16, 32, 64, 128)), rng.choice((1, 4, 8, 16))
    return finn_node("DuplicateStreams_rtl", NumChannels=ch, PE=_divisor(rng, ch),
                     NumOutputStreams=rng.choice((2, 2, 3)),
                     inputDataType=_int(rng.randint(2, 8), rng.random() < 0.5),
                     numInputVectors=[1, dim, dim])


def random_add_streams(rng: random.Random, impl: str = "rtl"):
    ch, dim = rng.choice((8, 16, 32, 64, 128)), rng.choice((1, 4, 8, 16))
    return finn_node("AddStreams_rtl", NumChannels=ch, PE=_divisor(rng, ch),
                     inputDataTypes=[_int(rng.randint(2, 8)) for _ in range(2)],
                     numInputVectors=[1, dim, dim])


def random_labelselect(rng: random.Random, impl: str = "hls"):
    labels = rng.choice((10, 100))
    return finn_node("LabelSelect_hls", Labels=labels, PE=_divisor(rng, labels), K=1,
                     inputDataType=_int(rng.randint(8, 24)), outputDataType="UINT8")


SWEEP: tuple[tuple[Callable, str, int], ...] = (  # builder, impl, relative weight
    (random_mvau, "rtl", 6), (random_mvau, "hls", 4), (random_thresholding, "rtl", 4),
    (random_thresholding, "hls", 2), (random_swg, "rtl", 4), (random_padding, "rtl", 1),
    (random_dwc, "rtl", 3), (random_dwc, "hls", 1), (random_fifo, "rtl", 3),
    (random_pool, "hls", 1), (random_labelselect, "hls", 1),
)


# The kinds graph networks add (depthwise VVAU), sampled from a random stream of their own, so
# that the nodes of SWEEP, and so their coefficients, stay what they were.
GRAPH_SWEEP: tuple[tuple[Callable, str, int], ...] = (
    (random_vvau, "rtl", 2), (random_vvau, "hls", 2), (random_pool_rtl, "rtl", 1),
    (random_global_acc_pool, "rtl", 1), (random_duplicate_streams, "rtl", 1),
    (random_add_streams, "rtl", 1),
)
GRAPH_SHARE = 8  # one graph-kind sample per this many of SWEEP's


def _draw(kinds: Sequence[tuple[Callable, str, int]], samples: int, rng: random.Random
          ) -> Iterator[tuple[object, str]]:
    weights = [w for *_, w in kinds]
    for _ in range(samples):
        builder, impl, _w = rng.choices(kinds, weights)[0]
        yield builder(rng, impl), rng.choice(PARTS)


def sweep(samples: int, seed: int = 0) -> Iterator[tuple[object, str]]:
    """(node, part) pairs: `samples` random FINN nodes over the sweep's kinds and both parts,
    then samples // GRAPH_SHARE of the graph kinds (GRAPH_SWEEP)."""
    yield from _draw(SWEEP, samples, random.Random(seed))
    yield from _draw(GRAPH_SWEEP, samples // GRAPH_SHARE, random.Random(f"graph{seed}"))


def finn_samples(samples: int, seed: int = 0) -> list[CalibrationSample]:
    """Calibration samples: random FINN nodes and FINN's estimate of each."""
    init_finn()
    out = []
    for node, part in sweep(samples, seed):
        resources, _cycles = finn_estimate(node, part)
        out.append(CalibrationSample(layer=layer_from_node(node, part), resources=resources,
                                     source=ResourceSource.FINN_ESTIMATE))
    return out


def calibrate_finn(samples: int = 3000, seed: int = 0) -> Calibration:
    """Fit the cost model to FINN's estimates of a seeded sweep of nodes."""
    return fit_calibration(
        finn_samples(samples, seed),
        description=f"FINN (finn-plus) node_res_estimation over {samples} random nodes and "
                    f"{samples // GRAPH_SHARE} of the graph kinds (seed {seed}) on "
                    f"{', '.join(PARTS)}; `python -m hw_models.calibrate`")


# ----------------------------------------------------------------------------- Yosys samples

FAMILY_PARTS = {"xc7": "xc7z020clg400-1", "xcup": "xczu7ev-ffvc1156-2-e"}


def hw_model(op_type: str, in_shape: list[int], out_shape: list[int], in_dt: str, out_dt: str,
             name: str, inits: dict | None = None, **attrs):
    """A one-node FINN HW model 'inp' -> 'outp' (unspecialised op_type) named `name`."""
    return hw_graph_model(op_type, {"inp": (in_shape, in_dt)}, {"outp": (out_shape, out_dt)},
                          name, inits, **attrs)


def hw_graph_model(op_type: str, inputs: dict[str, tuple[list[int], str]],
                   outputs: dict[str, tuple[list[int], str]], name: str,
                   inits: dict | None = None, **attrs):
    """A one-node FINN HW model with the given stream inputs and outputs ({tensor: (shape,
    datatype)}), e.g. the two inputs of an add or the two outputs of a fork."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    inits = inits or {}
    vi = {t: helper.make_tensor_value_info(t, TensorProto.FLOAT, shape)
          for t, (shape, _dt) in (inputs | outputs).items()}
    node = helper.make_node(op_type, [*inputs, *inits], list(outputs), name=name,
                            domain="finn.custom_op.fpgadataflow", backend="fpgadataflow", **attrs)
    graph = helper.make_graph([node], name, [vi[t] for t in inputs], [vi[t] for t in outputs])
    m = ModelWrapper(qonnx_make_model(graph))
    for t, (_shape, dt) in (inputs | outputs).items():
        m.set_tensor_datatype(t, DataType[dt])
    for tensor, (dt, values) in inits.items():
        m.set_tensor_datatype(tensor, DataType[dt])
        m.set_initializer(tensor, values)
    return m


def yosys_dwc(in_width: int, out_width: int):
    """A width converter between streams of in_width and out_width bits (elements of gcd bits)."""
    g = math.gcd(in_width, out_width)
    bits = next(b for b in range(min(g, 32), 0, -1) if g % b == 0)
    elems = in_width * out_width // g // bits
    dt = f"UINT{bits}"
    return hw_model("StreamingDataWidthConverter", [1, elems], [1, elems], dt, dt,
                    f"cal_dwc_{in_width}_{out_width}", dataType=dt, inShape=[1, elems],
                    outShape=[1, elems], inWidth=in_width, outWidth=out_width)


def yosys_fifo(depth: int, width: int, ram_style: str = "auto"):
    """A FIFO of depth words of `width` bits (elements of at most 32 bits)."""
    bits = next(b for b in range(min(width, 32), 0, -1) if width % b == 0)
    elems, dt = width // bits, f"UINT{bits}"
    return hw_model("StreamingFIFO", [1, 4 * elems], [1, 4 * elems], dt, dt,
                    f"cal_fifo_{depth}_{width}_{ram_style}", depth=depth,
                    folded_shape=[1, 4, elems], normal_shape=[1, 4 * elems], dataType=dt,
                    ram_style=ram_style)


def yosys_mvau(mw: int, mh: int, simd: int, pe: int, wbits: int, abits: int,
               ram_style: str = "auto"):
    """An MVAU with seeded random narrow-range weights (FINN's RTL MVAU on DSP48E1 needs them)."""
    import numpy as np

    top = 2 ** (wbits - 1) - 1
    weights = np.random.default_rng(mw * mh).integers(-top, top + 1, size=(mw, mh))
    idt, wdt = f"UINT{abits}", f"INT{wbits}"
    return hw_model("MVAU", [1, mw], [1, mh], idt, "INT32",
                    f"cal_mvau_{mw}_{mh}_{simd}_{pe}_{wbits}_{abits}_{ram_style}",
                    {"weights": (wdt, weights.astype(np.float32))}, MW=mw, MH=mh, SIMD=simd,
                    PE=pe, inputDataType=idt, weightDataType=wdt, outputDataType="INT32",
                    ActVal=0, binaryXnorMode=0, noActivation=1, numInputVectors=[1],
                    mem_mode="internal_decoupled", ram_style=ram_style)


def yosys_thresholding(channels: int, pe: int, in_bits: int, out_bits: int):
    """A Thresholding layer with seeded sorted thresholds across the input range."""
    import numpy as np

    steps = 2 ** out_bits - 1
    lo, hi = -(2 ** (in_bits - 1)), 2 ** (in_bits - 1) - 1
    rng = np.random.default_rng(channels * in_bits + out_bits)
    thr = np.sort(rng.integers(lo, hi + 1, size=(channels, steps)), axis=1).astype(np.float32)
    idt, odt = f"INT{in_bits}", f"UINT{out_bits}"
    return hw_model("Thresholding", [1, channels], [1, channels], idt, odt,
                    f"cal_thr_{channels}_{pe}_{in_bits}_{out_bits}",
                    {"thresh": (f"INT{in_bits + 1}", thr)}, NumChannels=channels, PE=pe,
                    numSteps=steps, inputDataType=idt, weightDataType=f"INT{in_bits + 1}",
                    outputDataType=odt, ActVal=0, numInputVectors=[1])


def yosys_swg(channels: int, dim: int, kernel: int, simd: int, bits: int,
              ram_style: str = "distributed", stride: int = 1):
    """A 2D sliding window (not depthwise) over a dim x dim image."""
    odim = (dim - kernel) // stride + 1
    dt = f"UINT{bits}"
    return hw_model("ConvolutionInputGenerator", [1, dim, dim, channels],
                    [1, odim, odim, kernel * kernel * channels], dt, dt,
                    f"cal_swg_{channels}_{dim}_{kernel}_{stride}_{simd}_{bits}_{ram_style}",
                    IFMChannels=channels, IFMDim=[dim, dim], OFMDim=[odim, odim],
                    ConvKernelDim=[kernel, kernel], Stride=[stride, stride], Dilation=[1, 1],
                    SIMD=simd, depthwise=0, parallel_window=0, inputDataType=dt,
                    outputDataType=dt, ram_style=ram_style)


def yosys_padding(channels: int, dim: int, simd: int, bits: int):
    """One pixel of zero padding around a dim x dim image."""
    dt = f"UINT{bits}"
    return hw_model("FMPadding", [1, dim, dim, channels], [1, dim + 2, dim + 2, channels], dt,
                    dt, f"cal_pad_{channels}_{dim}_{simd}_{bits}", ImgDim=[dim, dim],
                    Padding=[1, 1, 1, 1], NumChannels=channels, SIMD=simd, inputDataType=dt,
                    numInputVectors=1)


def yosys_pool(channels: int, pe: int, kernel: int, out_dim: int, bits: int,
               function: str = "MaxPool"):
    """densiflow's Pool (max, or AccPool: the window's sum) over kernel x kernel windows."""
    dt = f"UINT{bits}"
    acc = dt if function == "MaxPool" else f"UINT{bits + math.ceil(math.log2(kernel ** 2))}"
    return hw_model("Pool", [1, out_dim, out_dim, kernel * kernel * channels],
                    [1, out_dim, out_dim, channels], dt, acc,
                    f"cal_pool_{function}_{channels}_{pe}_{kernel}_{out_dim}_{bits}",
                    Channels=channels, PE=pe, KernelSize=[kernel, kernel], Function=function,
                    OutImgDims=[out_dim, out_dim], InputDataType=dt, OutputDataType=acc,
                    BatchSize=1)


def yosys_global_acc_pool(channels: int, pe: int, dim: int, bits: int):
    """GlobalAccPool: per-channel sums over a dim x dim image."""
    dt = f"INT{bits}"
    out = f"INT{bits + math.ceil(math.log2(dim * dim)) + 1}"
    return hw_model("GlobalAccPool", [1, dim, dim, channels], [1, 1, 1, channels], dt, out,
                    f"cal_gap_{channels}_{pe}_{dim}_{bits}", NumChannels=channels, PE=pe,
                    inputDataType=dt, numInputVectors=[1, dim, dim])


def yosys_duplicate_streams(channels: int, pe: int, dim: int, bits: int, outputs: int = 2):
    """DuplicateStreams: one stream to `outputs` streams."""
    dt, shape = f"UINT{bits}", [1, dim, dim, channels]
    return hw_graph_model("DuplicateStreams", {"inp": (shape, dt)},
                          {f"out{i}": (shape, dt) for i in range(outputs)},
                          f"cal_dup_{channels}_{pe}_{dim}_{bits}_{outputs}",
                          NumChannels=channels, PE=pe, NumOutputStreams=outputs,
                          inputDataType=dt, numInputVectors=[1, dim, dim])


def yosys_add_streams(channels: int, pe: int, dim: int, bits_a: int, bits_b: int):
    """AddStreams: the sum of two signed streams."""
    shape, a, b = [1, dim, dim, channels], f"INT{bits_a}", f"INT{bits_b}"
    out = f"INT{max(bits_a, bits_b) + 1}"
    return hw_graph_model("AddStreams", {"in0": (shape, a), "in1": (shape, b)},
                          {"outp": (shape, out)},
                          f"cal_add_{channels}_{pe}_{dim}_{bits_a}_{bits_b}", NumChannels=channels,
                          PE=pe, inputDataTypes=[a, b], numInputVectors=[1, dim, dim])


def yosys_vvau(channels: int, kernel: int, dim: int, pe: int, simd: int, wbits: int, abits: int):
    """A depthwise VVAU with seeded random narrow-range weights, noActivation (DSP58 RTL)."""
    import numpy as np

    top = 2 ** (wbits - 1) - 1
    weights = np.random.default_rng(channels * kernel).integers(
        -top, top + 1, size=(channels, 1, kernel, kernel))
    idt, wdt = f"UINT{abits}", f"INT{wbits}"
    acc = f"INT{acc_bits_bound(kernel * kernel, wbits, abits, False)}"
    return hw_model("VVAU", [1, dim, dim, kernel * kernel * channels], [1, dim, dim, channels],
                    idt, acc, f"cal_vvau_{channels}_{kernel}_{dim}_{pe}_{simd}_{wbits}_{abits}",
                    {"weights": (wdt, weights.astype(np.float32))}, Channels=channels,
                    Kernel=[kernel, kernel], Dim=[dim, dim], PE=pe, SIMD=simd,
                    inputDataType=idt, weightDataType=wdt, outputDataType=acc,
                    accDataType=acc, ActVal=0, noActivation=1, resType="dsp",
                    mem_mode="internal_decoupled")


# densiflow's RTL ops (hw_models.finn_ops) for the Yosys calibration: lanes, widths and folds.
YOSYS_GRAPH_SWEEP: tuple[tuple[Callable, tuple], ...] = (
    *((yosys_pool, p) for p in ((8, 2, 2, 2, 4), (16, 4, 3, 2, 6), (32, 8, 2, 4, 8),
                                (16, 16, 2, 2, 4), (8, 1, 2, 2, 4, "AccPool"),
                                (32, 4, 3, 2, 6, "AccPool"), (16, 16, 2, 1, 8, "AccPool"))),
    *((yosys_global_acc_pool, p) for p in ((8, 2, 4, 4), (16, 4, 8, 6), (64, 2, 4, 4),
                                           (32, 32, 2, 8), (128, 4, 7, 5), (16, 1, 4, 8))),
    *((yosys_duplicate_streams, p) for p in ((8, 2, 4, 4), (16, 16, 2, 8), (32, 4, 4, 6, 3),
                                             (64, 8, 2, 2))),
    *((yosys_add_streams, p) for p in ((8, 2, 4, 4, 4), (16, 16, 2, 8, 6), (32, 4, 4, 5, 5),
                                       (64, 8, 2, 3, 7))),
    *((yosys_vvau, p) for p in ((4, 3, 2, 2, 9, 4, 4), (16, 3, 4, 4, 1, 4, 4),
                                (32, 3, 4, 8, 3, 3, 5), (8, 5, 2, 2, 5, 6, 6),
                                (64, 3, 2, 4, 9, 4, 2))),
)


# Single nodes synthesised for the Yosys calibration: each kind over the parameters that change
# its structure (width converters with integer and fractional ratios, both directions).
YOSYS_SWEEP: tuple[tuple[Callable, tuple], ...] = (
    *((yosys_dwc, wh) for wh in ((64, 16), (96, 8), (240, 15), (480, 15), (128, 4), (256, 8),
                                 (320, 20), (12, 48), (16, 128), (15, 240), (24, 16), (16, 24),
                                 (30, 20), (40, 24), (36, 60), (88, 40), (72, 32))),
    *((yosys_fifo, p) for p in ((2, 8), (16, 64), (64, 8), (64, 16), (40, 4), (128, 16),
                                (128, 32), (200, 8), (256, 32), (1024, 16), (512, 64, "block"))),
    *((yosys_mvau, p) for p in ((16, 16, 4, 4, 4, 4), (32, 64, 8, 8, 3, 3),
                                (64, 32, 16, 2, 2, 6), (128, 16, 8, 16, 5, 4),
                                (27, 32, 9, 4, 6, 6), (256, 64, 4, 4, 4, 4), (32, 32, 4, 8, 4, 4),
                                (64, 16, 8, 4, 8, 8), (18, 16, 6, 16, 4, 4),
                                (64, 64, 2, 8, 4, 2, "distributed"))),
    *((yosys_thresholding, p) for p in ((8, 1, 8, 2), (32, 4, 12, 4), (64, 8, 16, 3),
                                        (128, 2, 20, 4), (16, 16, 8, 4), (48, 3, 10, 6))),
    *((yosys_swg, p) for p in ((3, 16, 3, 1, 8), (16, 12, 3, 4, 4), (64, 8, 5, 8, 2),
                               (32, 10, 3, 32, 4), (16, 32, 3, 2, 8),
                               (8, 28, 3, 8, 6, "block", 2))),
    *((yosys_padding, p) for p in ((3, 16, 1, 8), (64, 8, 16, 4))),
)


def _specialised(model, part: str):
    """The one-node model specialised to its RTL variant, keeping the node's name (a VVAU by
    densiflow's SpecializeVvauRtl: FINN's own has its RTL on Versal only)."""
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.custom_op.registry import getCustomOp

    from hw_models.finn_ops.vvau import SpecializeVvauRtl

    name = model.graph.node[0].name
    getCustomOp(model.graph.node[0]).set_nodeattr("preferred_impl_style", "rtl")
    model = model.transform(SpecializeVvauRtl(part)).transform(SpecializeLayers(part))
    model.graph.node[0].name = name
    return model


def synth_samples(rtl_model, family: str, cache: Path,
                  progress: Callable[[str, int, int], None] | None = None,
                  ) -> list[CalibrationSample]:
    """Yosys' counts of every node of an HDL-generated model as calibration samples."""
    from hw_models.synth import synthesise_design

    report = synthesise_design(rtl_model, family, cache_dir=cache, jobs=1, progress=progress)
    part = FAMILY_PARTS[family]
    layers = {n.name: layer_from_node(n, part) for n in rtl_model.graph.node}
    for n in report.nodes:  # a VVAU whose HDL was generated for Versal's DSP58, as built
        if "DSP58" in n.cells:
            layers[n.name] = layers[n.name].model_copy(update={"dsp_type": "DSP58"})
    return [CalibrationSample(layer=layers[n.name], resources=n.resources,
                              source=ResourceSource.YOSYS) for n in report.nodes]


def yosys_samples(family: str, work: Path, cache: Path, designs: Sequence[Path] = (),
                  progress: Callable[[str], None] | None = None,
                  nodes: Sequence[tuple[Callable, tuple]] = YOSYS_SWEEP,
                  ) -> list[CalibrationSample]:
    """Samples of a single-node sweep (`nodes`) and of every node of the given folded designs."""
    from hw_models.rtlsim import generate_rtl

    init_finn()
    part, say = FAMILY_PARTS[family], progress or (lambda _msg: None)
    out: list[CalibrationSample] = []
    for i, (builder, params) in enumerate(nodes):
        model = _specialised(builder(*params), part)
        name = model.graph.node[0].name
        say(f"[{i + 1}/{len(nodes)}] {name}")
        rtl = generate_rtl(model, work / family / name, fpgapart=part)
        out += synth_samples(rtl, family, cache)
    for design in designs:
        say(f"design {design}")
        rtl = generate_rtl(design, work / family / f"design_{_design_tag(design)}", fpgapart=part)
        out += synth_samples(rtl, family, cache, lambda n, d, t: say(f"  {n} ({d}/{t})"))
    return out


def _design_tag(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def calibrate_yosys(family: str, work: Path, cache: Path, designs: Sequence[Path] = (),
                    progress: Callable[[str], None] | None = None) -> Calibration:
    """Fit the cost model to Yosys' counts of the sweep (and the designs' nodes) for a family."""
    samples = yosys_samples(family, work, cache, designs, progress)
    named = ", ".join(Path(d).name for d in designs)
    return fit_calibration(
        samples, family=family, held_out=True,
        description=f"Yosys synthesis ({yosys_name()}, synth_xilinx -family {family}) of "
                    f"{len(YOSYS_SWEEP)} single FINN RTL nodes"
                    + (f" and the nodes of {named}" if designs else "")
                    + f" on {FAMILY_PARTS[family]}; `python -m hw_models.calibrate --source "
                    f"yosys --family {family}`")


def calibrate_yosys_graph(family: str, work: Path, cache: Path,
                          progress: Callable[[str], None] | None = None) -> Calibration:
    """The stored Yosys calibration of a family extended by a fit to densiflow's graph ops
    (YOSYS_GRAPH_SWEEP), each with its leave-one-out error; the other node types unchanged."""
    from hw_models.cost import load_calibration

    samples = yosys_samples(family, work, cache, (), progress, YOSYS_GRAPH_SWEEP)
    kinds = sorted({s.layer.node_type for s in samples})
    added = fit_calibration(
        samples, family=family, held_out=True,
        description=f"{', '.join(kinds)} from {len(YOSYS_GRAPH_SWEEP)} single nodes "
                    f"synthesised the same way; `python -m "
                    f"hw_models.calibrate --source yosys --family {family} --graph-ops`")
    return load_calibration(ResourceSource.YOSYS, family).extended(added)


def yosys_name() -> str:
    from hw_models.synth.yosys import yosys_version

    return yosys_version()


def _log_fit(cal: Calibration) -> None:
    for node_type, fits in cal.fit.items():
        for res, f in fits.items():
            if f.worst_rel_error > 0:
                loo = cal.held_out.get(node_type, {}).get(res)
                log.info("%-36s %-6s median %.3f worst %.3f (%d samples)%s", node_type, res,
                         f.median_rel_error, f.worst_rel_error, f.samples,
                         f"; held out: median {loo.median_rel_error:.3f} worst "
                         f"{loo.worst_rel_error:.3f}" if loo else "")


def _default_cache() -> Path:
    """$DENSIFLOW_SYNTH_CACHE, else build/out/synth_cache (the runs' shared synthesis cache)."""
    env = os.environ.get("DENSIFLOW_SYNTH_CACHE")
    return Path(env) if env else Path("build/out/synth_cache")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("finn_estimate", "yosys"), default="finn_estimate")
    parser.add_argument("--family", choices=tuple(FAMILY_PARTS), default="xc7",
                        help="Yosys family (--source yosys)")
    parser.add_argument("--samples", type=int, default=3000, help="FINN: random nodes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--design", type=Path, action="append", default=[],
                        help="yosys: also every node of this folded dataflow model (.onnx)")
    parser.add_argument("--graph-ops", action="store_true",
                        help="yosys: synthesise densiflow's graph ops only (YOSYS_GRAPH_SWEEP) "
                             "and add their fit to the stored calibration")
    parser.add_argument("--work", type=Path, default=Path("build/out/calibrate"),
                        help="yosys: where the nodes' HDL is generated")
    parser.add_argument("--cache", type=Path, default=None, help="yosys: synthesis cache")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("finn_logger").setLevel(logging.ERROR)  # FIFO style notes per sample
    source = ResourceSource(args.source)
    if source == ResourceSource.YOSYS and args.graph_ops:
        cal = calibrate_yosys_graph(args.family, args.work.resolve(),
                                    args.cache or _default_cache(), log.info)
        out = args.out or calibration_path(source, args.family)
    elif source == ResourceSource.YOSYS:
        cal = calibrate_yosys(args.family, args.work.resolve(), args.cache or _default_cache(),
                              args.design, log.info)
        out = args.out or calibration_path(source, args.family)
    else:
        cal = calibrate_finn(args.samples, args.seed)
        out = args.out or calibration_path(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    cal.save(out)
    _log_fit(cal)
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
