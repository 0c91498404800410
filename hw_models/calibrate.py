"""Fit the cost model's coefficients to FINN's own estimates over a sweep of real FINN HW nodes.

    python -m hw_models.calibrate [--samples N] [--seed S] [--out hw_models/calibration/finn_estimate.json]

Each sample is one specialised FINN node (MVAU_rtl/_hls, Thresholding_rtl/_hls,
ConvolutionInputGenerator_rtl, FMPadding_rtl, StreamingDataWidthConverter_rtl/_hls,
StreamingFIFO_rtl, Pool_hls, LabelSelect_hls) with random legal geometry, bit-widths, folding and
memory styles, built with onnx helpers and estimated by FINN's `node_res_estimation` on a 7-series
(xc7z020) and an UltraScale+ (xczu7ev) part. The fitted `Calibration` (source: FINN estimate)
holds the coefficients and their error on the samples. A second calibration against synthesis is
fitted the same way from `CalibrationSample`s whose source is `ResourceSource.YOSYS`.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from hw_models.cost import (
    Calibration,
    CalibrationSample,
    calibration_path,
    fit_calibration,
    layer_from_node,
)
from hw_models.resources import Resources, ResourceSource

log = logging.getLogger(__name__)

PARTS = ("xc7z020clg400-1", "xczu7ev-ffvc1156-2-e")
RTL, HLS = "finn.custom_op.fpgadataflow.rtl", "finn.custom_op.fpgadataflow.hls"


def init_finn() -> None:
    """Dummy FINN settings and a build folder, as every FINN transformation needs."""
    import finn.custom_op.fpgadataflow.hls
    import finn.custom_op.fpgadataflow.rtl  # noqa: F401
    from finn.util.settings import initialize_dummy_settings

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
    return rng.choice([d for d in range(1, n + 1) if n % d == 0])


def _int(bits: int, signed: bool = True) -> str:
    return f"{'INT' if signed else 'UINT'}{bits}"


def _acc(rng: random.Random, mw: int, w: int, a: int) -> str:
    from hw_models.cost import acc_bits_bound

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


def sweep(samples: int, seed: int = 0) -> Iterator[tuple[object, str]]:
    """(node, part) pairs: `samples` random FINN nodes over the sweep's kinds and both parts."""
    rng = random.Random(seed)
    weights = [w for *_, w in SWEEP]
    for _ in range(samples):
        builder, impl, _w = rng.choices(SWEEP, weights)[0]
        yield builder(rng, impl), rng.choice(PARTS)


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
        description=f"FINN (finn-plus) node_res_estimation over {samples} random nodes "
                    f"(seed {seed}) on {', '.join(PARTS)}; `python -m hw_models.calibrate`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path,
                        default=calibration_path(ResourceSource.FINN_ESTIMATE))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("finn_logger").setLevel(logging.ERROR)  # FIFO style notes per sample
    cal = calibrate_finn(args.samples, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cal.save(args.out)
    for node_type, fits in cal.fit.items():
        for res, f in fits.items():
            if f.worst_rel_error > 0:
                log.info("%-36s %-6s median %.3f worst %.3f (%d samples)", node_type, res,
                         f.median_rel_error, f.worst_rel_error, f.samples)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
