"""The cycles of a simulation: the bound no run may pass, what a run is expected to take, and what
one node measured per frame."""
from __future__ import annotations

from dataclasses import dataclass

from hw_models.errors import SimulationError

# The most cycles one harness process simulates before it stops (status "cycle_limit"): about
# 40 minutes of the digits chain, which simulates ~80k cycles per CPU second (tiny chains run
# millions). A run expected to need more than half of it is refused before it starts, so FINN
# estimates off by 2x still finish.
MAX_CYCLES = 200_000_000


def expected_cycles(frames: int, cycles_per_frame: int, fill_cycles: int, out_words: int,
                    backpressure: float, in_words: int = 0, gaps: float = 0.0) -> float:
    """Cycles a run of `frames` should take: the pipeline's fill, then per frame the slowest of
    its bottleneck (`cycles_per_frame`), its output, whose `out_words` words each wait
    1 / (1 - backpressure) cycles on average for a ready consumer, and its input, whose
    `in_words` words each wait 1 / (1 - gaps) cycles on average to be offered."""
    if backpressure >= 1.0 or gaps >= 1.0:
        return float("inf")
    return fill_cycles + frames * max(cycles_per_frame, out_words / (1.0 - backpressure),
                                      in_words / (1.0 - gaps))


def check_cycle_bound(expected: float, frames: int, backpressure: float) -> None:
    """SimulationError in one line when a run is expected to need more than MAX_CYCLES / 2."""
    if expected > MAX_CYCLES / 2:
        raise SimulationError(
            f"{frames} frame(s) at backpressure {backpressure!r} need about {expected:.3g} "
            f"simulated cycles, over the bound of {MAX_CYCLES // 2:.3g} (half of "
            f"hw_models.rtlsim.cycles.MAX_CYCLES); give a lower backpressure or fewer frames"
        )


@dataclass
class NodeCycles:
    """Measured cycles per frame of one node, next to FINN's estimate (JSON-able).

    All values are per frame, over the node's steady window (from the end of its first output
    frame to the end of its last one), so None with fewer than two frames. In a pipeline every
    node settles to the chain's rate, so `interval` alone cannot name a bottleneck: `busy` (the
    interval minus the cycles the node waited on its neighbours) is the node's own cost, the
    number to set against FINN's `estimated` get_exp_cycles().
    """

    name: str
    op_type: str
    estimated: int  # FINN's get_exp_cycles() (0 for DWCs and FIFOs: FINN does not model them)
    words_per_frame: int  # output stream words per frame
    interval: float | None  # cycles between the ends of successive output frames
    busy: float | None  # interval - blocked - starved: the cycles the node itself needed
    blocked: float | None  # cycles its output word waited for the consumer (backpressure)
    starved: float | None  # cycles it produced nothing while its producer offered nothing
    span: float | None  # mean cycles from a frame's first to its last output word

    @property
    def over_estimate(self) -> float | None:
        """busy / estimated (None without an estimate or a steady window)."""
        if self.busy is None or not self.estimated:
            return None
        return self.busy / self.estimated
