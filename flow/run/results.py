"""Typed results of the run's steps, saved in each step's result.json (flow.run.folder.StepRecord).

Every accuracy names its stage in its field: `float_` (the trained float network), `qat_` (the
plan's network after the qat step's fine-tuning), `rtl_` (the simulated RTL's predictions).
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from flow.finn import FinnBuild
from flow.finn.deploy import DeployManifest
from flow.ml.metrics import PlanMetrics
from flow.recipe.plan import CompressionPlan
from flow.sim.synth import SynthResult
from hw_models.rtlsim.runner import RunStats


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BaselineResult(_Result):
    float_val_accuracy: float
    float_test_accuracy: float


class PlanResult(_Result):
    method: str
    plan: CompressionPlan
    plan_digest: str
    trained_model: bool  # the method trained a network (02_plan/model.pt) the qat step starts from


class QatResult(_Result):
    qat_val_accuracy: float
    qat_test_accuracy: float
    epochs: int
    metrics: PlanMetrics
    performance_density: float  # qat test accuracy in % per Mbit of weights + activations


class ExportResult(_Result):
    frames: int
    max_abs_error: float
    max_rel_error: float
    prediction_agreement: float  # QONNX vs PyTorch argmax on the checked frames


class FinnResult(_Result):
    build: FinnBuild  # FINN's estimate, folding, and the check of its HW layers against QONNX


class Bottleneck(_Result):
    """The slowest node a simulation measured, beside FINN's estimate of it."""

    node: str
    busy_cycles: float  # cycles per frame the node itself needed
    estimated_cycles: int  # FINN's get_exp_cycles()


class RtlVerification(_Result):
    """The RTL simulation against FINN's python execution, PyTorch and the labels."""

    frames: int
    output_words: int
    mismatches: int  # output words differing from FINN's python execution
    rtl_test_accuracy: float  # the simulated RTL's predictions vs the labels
    agreement_with_pytorch: float  # share of frames where the RTL predicts what PyTorch does
    min_agreement: float
    measured_latency_cycles: int
    measured_cycles_per_frame: float | None
    estimated_cycles_per_frame: int
    measured_over_estimated: float | None
    measured_fps: float | None
    backpressure: float
    bottleneck: Bottleneck | None  # the node with the most busy cycles (None: < 2 frames)
    sim: RunStats  # the simulator's own figures

    def lines(self) -> list[str]:
        """The simulation's figures, one line each."""
        measured = ("-" if self.measured_cycles_per_frame is None
                    else f"{self.measured_cycles_per_frame:.1f}")
        lines = [
            f"RTL simulation: {self.frames} frames, backpressure {self.backpressure:g}, "
            f"{self.mismatches} mismatching words of {self.output_words}, accuracy "
            f"{100 * self.rtl_test_accuracy:.2f} %, agreement with PyTorch "
            f"{100 * self.agreement_with_pytorch:.1f} %",
            f"cycles/frame: {measured} measured vs {self.estimated_cycles_per_frame} estimated; "
            f"first-frame latency {self.measured_latency_cycles} cycles",
        ]
        if self.bottleneck:
            b = self.bottleneck
            lines.append(f"measured bottleneck: {b.node}, busy {b.busy_cycles:.0f} "
                         f"cycles/frame (FINN estimate {b.estimated_cycles})")
        return lines


class SimulateResult(_Result):
    skipped: str | None = None  # why no simulation ran
    validation: RtlVerification | None = None


class SynthStepResult(_Result):
    skipped: str | None = None  # why no synthesis ran
    result: SynthResult | None = None  # Yosys per node, FINN beside it, the board fit


class DeployStepResult(_Result):
    skipped: str | None = None  # why no deployment folder was made
    manifest: DeployManifest | None = None  # flow.finn.deploy: files, shapes, bitfile, Vivado
    bitstream: bool = False  # was the bitfile built


class ReportResult(_Result):
    summary: str
    html: str
