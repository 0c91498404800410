"""What `densiflow simulate RUN` checks before any work, and the exact name of its result folder.

The cycle bound: a run of N frames at backpressure P needs at least the pipeline's fill plus, per
frame, the slower of FINN's bottleneck estimate and 1 / (1 - P) cycles for its (at least one)
output word; over half of hw_models.rtlsim.cycles.MAX_CYCLES it is refused here, before the RTL
is generated or built (the runner checks again with the chain's real output words, and the
harness stops at MAX_CYCLES whatever happens).
"""
from __future__ import annotations

from flow.run.run import Run
from hw_models.cache import usable_cache_dir
from hw_models.rtlsim.build import CACHE_ENV
from hw_models.rtlsim.cycles import check_cycle_bound, expected_cycles


def simulation_name(frames: int, backpressure: float) -> str:
    """`frames<N>_bp<P>` with P written exactly (as given when short, else Python's repr), so
    two different requests never share a folder."""
    short = f"{backpressure:g}"
    return f"frames{frames}_bp{short if float(short) == backpressure else repr(backpressure)}"


def check_simulation(run: Run, frames: int | None, backpressure: float) -> int:
    """The frames to simulate (all test frames by default), after checking the Verilator cache
    folder and the cycle bound (HardwareError in one line)."""
    usable_cache_dir(run.rtlsim_cache, CACHE_ENV)
    n = frames or len(run.data.x_test)
    perf = run.finn_build().performance
    check_cycle_bound(expected_cycles(n, perf.steady_state_cycles, perf.latency_cycles, 1,
                                      backpressure), n, backpressure)
    return n
