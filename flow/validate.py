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
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.custom_op.registry import getCustomOp

from flow.errors import ModelError, VerificationError
from flow.io import atomic_write_text

log = logging.getLogger(__name__)


def reference_streams(parent_path: Path, python_child_path: Path,
                      frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Partition input, partition output and model output of each frame, by python execution."""
    parent = ModelWrapper(str(parent_path))
    partitions = parent.get_nodes_by_op_type("StreamingDataflowPartition")
    if len(partitions) != 1:
        raise ModelError(f"{parent_path}: expected one dataflow partition, found {len(partitions)}")
    node = partitions[0]
    getCustomOp(node).set_nodeattr("model", str(python_child_path))
    iname, oname = parent.graph.input[0].name, parent.graph.output[0].name
    ins, outs, finals = [], [], []
    for frame in frames:
        ctx = execute_onnx(parent, {iname: frame[None].astype(np.float32)},
                           return_full_exec_context=True)
        ins.append(ctx[node.input[0]][0])
        outs.append(ctx[node.output[0]][0])
        finals.append(ctx[oname][0])
    return np.stack(ins), np.stack(outs), np.stack(finals)


def validate_rtl(finn_dir: Path, paths: dict[str, str], frames: np.ndarray, labels: np.ndarray,
                 torch_logits: np.ndarray, out_dir: Path, part: str, clock_mhz: float,
                 estimated_cycles: int, backpressure: float = 0.0,
                 cache_dir: Path | None = None) -> dict:
    """Simulate `frames` (NCHW raw pixels) on the generated RTL and compare at every level.

    Raises VerificationError on any output word that differs from FINN's python execution.
    """
    from hw_models.rtlsim import build_simulator, generate_rtl, run_frames

    part_in, part_out, final = reference_streams(
        finn_dir / paths["dataflow_parent"], finn_dir / paths["dataflow_python"], frames
    )
    if not np.array_equal(part_out.reshape(len(frames), -1).argmax(1),
                          final.reshape(len(frames), -1).argmax(1)):
        raise ModelError("the nodes after the dataflow partition change the predicted class; "
                         "only a positive per-tensor scale may follow the accelerator")
    rtl_model = generate_rtl(finn_dir / paths["dataflow_rtl"], out_dir / "rtl", fpgapart=part,
                             clk_ns=1000.0 / clock_mhz)
    sim = build_simulator(rtl_model, cache_dir=cache_dir)
    log.info("simulating %d frames on the RTL (backpressure %.0f %%)", len(frames),
             100 * backpressure)
    got, stats = run_frames(sim, part_in, backpressure=backpressure)
    got = got.reshape(part_out.shape)
    mismatches = int(np.count_nonzero(got != part_out))
    hw_pred = got.reshape(len(frames), -1).argmax(1)
    measured, slowest = stats.steady_cycles_per_frame, stats.bottleneck
    result = {
        "frames": len(frames),
        "output_words": int(part_out.size),
        "mismatches": mismatches,
        "accuracy": float(np.mean(hw_pred == labels)),
        "agreement_with_pytorch": float(np.mean(hw_pred == torch_logits.argmax(1))),
        "measured_latency_cycles": stats.first_frame_latency,
        "measured_cycles_per_frame": measured,
        "estimated_cycles_per_frame": estimated_cycles,
        "measured_over_estimated": None if measured is None else measured / estimated_cycles,
        "measured_fps": None if measured is None else clock_mhz * 1e6 / measured,
        "backpressure": backpressure,
        "bottleneck": None if slowest is None else {
            "node": slowest.name, "busy_cycles": slowest.busy,
            "estimated_cycles": slowest.estimated},
        "sim": stats.to_json(),
    }
    atomic_write_text(out_dir / "node_cycles.txt", stats.node_table() + "\n")
    result["sim"].pop("frame_done")
    if mismatches:
        first = int(np.flatnonzero((got != part_out).reshape(len(frames), -1).any(1))[0])
        raise VerificationError(
            f"RTL simulation differs from FINN's python execution in {mismatches} of "
            f"{part_out.size} output words (first bad frame: {first})"
        )
    return result
