"""The typed data of a HIL validation: options, estimates, journal records, the result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from flow.core.errors import DensiflowError

JOURNAL_FORMAT = 1
CLIENT_MAX_MESSAGE = 1 << 30  # never accept more, whatever an agent declares


class HilError(DensiflowError):
    """HIL validation cannot run or finish: target, token, artefact, protocol or journal."""


class Estimate(BaseModel):
    """A throughput/latency figure to show next to the measured ones (FINN's, the RTL sim's)."""

    source: str
    fps: float | None = None
    latency_us: float | None = None


class Mismatch(BaseModel):
    """One output word that differs from the golden output."""

    frame: int  # index in the test split
    index: int  # word index within the frame's flattened output
    expected: float
    got: float


class SimCycles(BaseModel):
    """Simulated cycles of one request (rtlsim backend)."""

    total: int
    latency: int  # first frame
    steady: float | None  # cycles per frame after the first (None for one frame)


class ResultHeader(BaseModel):
    """The checked fields of an agent's result message."""

    batch: int
    sha256: str
    seconds: float = Field(ge=0)
    cycles: SimCycles | None = None


class BatchRecord(BaseModel):
    """One verified batch, as the journal keeps it."""

    batch: int
    start: int
    frames: int
    mismatches: int
    first_mismatches: list[Mismatch]
    predictions: list[int]
    round_trip_s: float
    device_s: float
    cycles: SimCycles | None
    out_sha256: str


class JournalHeader(BaseModel):
    """What a journal's records were verified against (a resume must match it)."""

    format: int = JOURNAL_FORMAT
    backend: str
    artefact_sha256: str
    frames: int
    batch_size: int
    inputs_sha256: str
    expected_sha256: str


class BatchTiming(BaseModel):
    """Timing of one batch: client round trip and the agent's backend time."""

    batch: int
    frames: int
    round_trip_s: float
    device_s: float


class HilOptions(BaseModel):
    """How the client streams and waits."""

    batch_size: int | None = Field(None, ge=1)  # default: the agent's most frames per request
    timeout_s: float = Field(120.0, gt=0)  # connect, and every read
    latency_probes: int = Field(3, ge=0, le=100)  # one-frame requests timed after the split
    fresh: bool = False  # discard the journal and start over
    show_mismatches: int = Field(10, ge=0, le=1000)


class HilEvent(BaseModel):
    """Progress: a batch sent or verified, a latency probe."""

    kind: Literal["sent", "verified", "probe"]
    batch: int
    frames_done: int
    frames_total: int


class HilResult(BaseModel):
    """Outcome of a HIL validation of the whole split (written to 08_hil/, summary.json)."""

    target: str
    backend: str
    artefact_sha256: str
    frames: int
    batch_size: int
    batches: int
    resumed_batches: int  # verified in an earlier, interrupted session
    output_words: int
    mismatches: int
    probe_mismatches: int
    first_mismatches: list[Mismatch]
    bit_exact: bool
    accuracy: float | None
    agreement_with_reference: float | None  # hardware class == PyTorch's (flow.ml.agreement)
    wall_fps: float  # frames / sum of batch round trips (packing, network, backend)
    device_fps: float  # frames / sum of the agent's backend time
    latency_ms: float | None  # median backend time of a one-frame request
    round_trip_latency_ms: float | None
    clock_mhz: float | None
    simulated_fps: float | None  # rtlsim: clock / steady simulated cycles per frame
    simulated_latency_us: float | None  # rtlsim: first frame's simulated cycles / clock
    estimates: list[Estimate]
    batch_timings: list[BatchTiming]
    session_s: float  # wall time of this call

    def summary_line(self) -> str:
        """One line for the terminal."""
        acc = "-" if self.accuracy is None else f"{100 * self.accuracy:.2f} %"
        verdict = "bit-exact" if self.bit_exact else "MISMATCH"
        return (f"HIL {self.target} ({self.backend}): {self.frames} frames, "
                f"{self.mismatches + self.probe_mismatches} of {self.output_words} words differ "
                f"({verdict}), accuracy {acc}, {self.wall_fps:.1f} frames/s wall, "
                f"{self.device_fps:.1f} frames/s on the device")


@dataclass(frozen=True)
class Golden:
    """The test split as the accelerator sees it, and what it must answer."""

    inputs: np.ndarray  # partition inputs, one frame per row
    expected: np.ndarray  # partition outputs by FINN's python execution, one frame per row
    labels: np.ndarray | None = None
    reference_logits: np.ndarray | None = None  # the trained network's (PyTorch's) logits
