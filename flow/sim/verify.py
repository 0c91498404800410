"""Golden comparison of the simulated RTL against FINN's python execution and PyTorch.

The FINN parent model is executed in python with its dataflow partition pointing at the
unspecialized HW model; that yields, per frame, the partition's input stream (what the RTL is
fed) and its output stream (what the RTL must emit, word for word). The Verilator simulation of
the specialized, folded chain must match every output word; its predictions are compared with
PyTorch's and the labels, and its measured cycles with FINN's estimates.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from flow.core.errors import ConfigError, ModelError, VerificationError
from flow.core.io import atomic_write_text
from flow.core.progress import progress_bar
from flow.finn.verify import partition_streams
from flow.ml.agreement import agrees
from flow.run.results import Bottleneck, RtlVerification
from flow.run.run import Run
from flow.run.table import step_folder

log = logging.getLogger(__name__)


def verify_run(run: Run, out_dir: Path, frames: int | None, backpressure: float,
                 min_agreement: float) -> RtlVerification:
    """Simulate a run's FINN build on its test split (or the first `frames`) and check it."""
    from flow.ml.train import predict

    d = run.data
    n = frames or len(d.x_test)
    if n > len(d.x_test):
        raise ConfigError(f"frames: {n} is more than the test split holds; "
                          f"allowed: 1..{len(d.x_test)}")
    x, y = d.x_test[:n], d.y_test[:n]
    build = run.finn_build()
    paths = {k: build.path(k) for k in ("dataflow_parent", "dataflow_python", "dataflow_rtl")}
    result = verify_rtl(
        paths, x.numpy(), y.numpy(), predict(run.quant_model(), x).numpy(), out_dir,
        build.part, build.clock_mhz, build.performance.steady_state_cycles,
        backpressure, min_agreement, cache_dir=run.rtlsim_cache,
    )
    return result


def verify_rtl(paths: dict[str, Path], frames: np.ndarray, labels: np.ndarray,
                 torch_logits: np.ndarray, out_dir: Path, part: str, clock_mhz: float,
                 estimated_cycles: int, backpressure: float = 0.0, min_agreement: float = 1.0,
                 cache_dir: Path | None = None) -> RtlVerification:
    """Simulate `frames` (NCHW raw pixels) on the generated RTL and compare at every level.

    Raises VerificationError on any output word that differs from FINN's python execution, or
    when the RTL predicts what PyTorch predicts on fewer than `min_agreement` of the frames
    (ties within float rounding agree: flow.ml.agreement).
    """
    from hw_models.rtlsim import build_simulator, generate_rtl, run_frames

    part_in, part_out, final = partition_streams(
        paths["dataflow_parent"], paths["dataflow_python"], frames
    )
    if not np.array_equal(part_out.reshape(len(frames), -1).argmax(1),
                          final.reshape(len(frames), -1).argmax(1)):
        raise ModelError("the nodes after the dataflow partition change the predicted class; "
                         "only a positive per-tensor scale may follow the accelerator")
    rtl_model = generate_rtl(paths["dataflow_rtl"], out_dir / "rtl", fpgapart=part,
                             clk_ns=1000.0 / clock_mhz)
    with progress_bar("Verilator") as update:
        sim = build_simulator(rtl_model, cache_dir=cache_dir,
                              progress=lambda phase, done, total: update(done, total, phase))
    log.info("simulating %d frames on the RTL (backpressure %.0f %%)", len(frames),
             100 * backpressure)
    with progress_bar("simulation") as update:
        got, stats = run_frames(sim, part_in, backpressure=backpressure,
                                progress=lambda phase, done, total: update(done, total, "frames"))
    got = got.reshape(part_out.shape)
    atomic_write_text(out_dir / "node_cycles.txt", stats.node_table() + "\n")
    result = _verification(got, part_out, labels, torch_logits, stats, clock_mhz, estimated_cycles,
                         backpressure, min_agreement)
    _check(result, got, part_out)
    return result


def _verification(got, expected, labels, torch_logits, stats, clock_mhz: float,
                  estimated_cycles: int, backpressure: float,
                  min_agreement: float) -> RtlVerification:
    n = len(labels)
    hw_pred = got.reshape(n, -1).argmax(1)
    measured, slowest = stats.steady_cycles_per_frame, stats.bottleneck
    return RtlVerification(
        frames=n, output_words=int(expected.size),
        mismatches=int(np.count_nonzero(got != expected)),
        rtl_test_accuracy=float(np.mean(hw_pred == labels)),
        agreement_with_pytorch=float(np.mean(agrees(hw_pred, torch_logits))),
        min_agreement=min_agreement,
        measured_latency_cycles=stats.first_frame_latency,
        measured_cycles_per_frame=measured, estimated_cycles_per_frame=estimated_cycles,
        measured_over_estimated=None if measured is None else measured / estimated_cycles,
        measured_fps=None if measured is None else clock_mhz * 1e6 / measured,
        backpressure=backpressure,
        bottleneck=None if slowest is None else Bottleneck(
            node=slowest.name, busy_cycles=slowest.busy, estimated_cycles=slowest.estimated),
        sim=stats,
    )


def _check(result: RtlVerification, got: np.ndarray, expected: np.ndarray) -> None:
    """VerificationError on any mismatching word or too little agreement with PyTorch."""
    if result.mismatches:
        bad = (got != expected).reshape(result.frames, -1).any(1)
        raise VerificationError(
            f"RTL simulation differs from FINN's python execution in {result.mismatches} of "
            f"{result.output_words} output words (first bad frame: {int(np.flatnonzero(bad)[0])})"
        )
    if result.agreement_with_pytorch < result.min_agreement:
        raise VerificationError(
            f"the simulated RTL predicts what PyTorch predicts on "
            f"{100 * result.agreement_with_pytorch:.1f} % of {result.frames} frames, below "
            f"simulate.min_agreement {100 * result.min_agreement:.1f} %: the hardware does not "
            f"implement the trained network (were {step_folder('qat')} or {step_folder('export')} "
            "changed?)"
        )
