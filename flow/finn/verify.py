"""Python execution of FINN models: the HW-layer model against QONNX, the partition's streams."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from flow.core.errors import ModelError, VerificationError


class HwVerification(BaseModel):
    """QONNX vs FINN HW-layer python execution on a batch of frames."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    frames: int
    max_abs_error: float
    max_rel_error: float  # of the largest QONNX output magnitude
    mismatched_outputs: float  # share of output values off by more than 1e-6 of that magnitude
    argmax_agreement: float
    tolerance: float


def random_input_batch(model, frames: int = 4, seed: int = 0) -> np.ndarray:
    """Integers drawn over the whole range of the model input's datatype."""
    inp = model.graph.input[0].name
    dt = model.get_tensor_datatype(inp)
    shape = [frames, *model.get_tensor_shape(inp)[1:]]
    rng = np.random.default_rng(seed)
    return rng.integers(int(dt.min()), int(dt.max()) + 1, size=shape).astype(np.float32)


def execute_frames(model, batch: np.ndarray) -> np.ndarray:
    """Outputs of QONNX's python execution of `model`, frame by frame, stacked."""
    from qonnx.core.onnx_exec import execute_onnx

    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    frames = np.asarray(batch, dtype=np.float32)
    return np.concatenate([execute_onnx(model, {iname: f[None]})[oname] for f in frames])


def verify_hw_model(qonnx_model, hw_model, batch: np.ndarray,
                    tolerance: float = 0.05) -> HwVerification:
    """Execute the QONNX model and the (unspecialised) HW-layer model on `batch`, frame by frame.

    Raises VerificationError when max |qonnx - hw| > tolerance * max |qonnx|. Streamlining turns
    float quantizers into float32 thresholds, so an accumulator within rounding of a quantization
    boundary can flip one activation step (seen with 8-bit activations: ~3e-3 of the output range
    on 1 of 4 random frames); a wrong conversion disagrees by the order of the output range.
    """
    ref = execute_frames(qonnx_model, batch)
    got = execute_frames(hw_model, batch).reshape(ref.shape)
    diff = np.abs(ref - got)
    err = float(diff.max())
    scale = float(np.abs(ref).max()) or 1.0
    if err > tolerance * scale:
        raise VerificationError(
            f"FINN HW-layer model differs from the QONNX model: max abs error {err:.3g} > "
            f"{tolerance * scale:.3g} ({tolerance:g} of the output range) on {len(batch)} frames"
        )
    return HwVerification(
        frames=len(batch), max_abs_error=err, max_rel_error=err / scale,
        mismatched_outputs=float(np.mean(diff > 1e-6 * scale)),
        argmax_agreement=float(np.mean(ref.reshape(len(ref), -1).argmax(1)
                                       == got.reshape(len(ref), -1).argmax(1))),
        tolerance=tolerance,
    )


def partition_streams(parent_path: Path | str, python_child_path: Path | str,
                      frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: the dataflow partition's input, its output and the model's output.

    The parent model runs in python with its partition pointing at the unspecialised
    (python-executable) child: the partition's streams are what the accelerator is fed and
    must emit, word for word.
    """
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.custom_op.registry import getCustomOp

    parent = ModelWrapper(str(parent_path))
    partitions = parent.get_nodes_by_op_type("StreamingDataflowPartition")
    if len(partitions) != 1:
        raise ModelError(f"{parent_path}: expected one dataflow partition, found {len(partitions)}")
    (node,) = partitions
    getCustomOp(node).set_nodeattr("model", str(python_child_path))
    iname, oname = parent.graph.input[0].name, parent.graph.output[0].name
    ins, outs, finals = [], [], []
    for frame in np.asarray(frames, dtype=np.float32):
        ctx = execute_onnx(parent, {iname: frame[None]}, return_full_exec_context=True)
        ins.append(ctx[node.input[0]][0])
        outs.append(ctx[node.output[0]][0])
        finals.append(ctx[oname][0])
    return np.stack(ins), np.stack(outs), np.stack(finals)
