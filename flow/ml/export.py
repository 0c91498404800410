"""Brevitas -> QONNX export, cleaned up, with the input's integer type set and verified."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from brevitas.export import export_qonnx
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.util.cleanup import cleanup_model

from flow.core.errors import VerificationError
from flow.models import Net

log = logging.getLogger(__name__)


def export_model(model: Net, in_shape: tuple[int, ...], input_bits: int,
                 path: Path) -> ModelWrapper:
    """Export to QONNX at `path` (batch 1); the input is annotated UINT<input_bits>."""
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    export_qonnx(model, input_t=torch.zeros(1, *in_shape), export_path=str(tmp), dynamo=False)
    qmodel = cleanup_model(ModelWrapper(str(tmp)))
    qmodel.set_tensor_datatype(qmodel.graph.input[0].name, DataType[f"UINT{input_bits}"])
    qmodel.save(str(tmp))
    tmp.replace(path)
    return ModelWrapper(str(path))


def qonnx_outputs(qmodel: ModelWrapper, x: torch.Tensor) -> np.ndarray:
    """Execute the QONNX graph frame by frame; returns the stacked outputs."""
    iname, oname = qmodel.graph.input[0].name, qmodel.graph.output[0].name
    outs = [
        execute_onnx(qmodel, {iname: frame[None].numpy().astype(np.float32)})[oname]
        for frame in x
    ]
    return np.concatenate(outs)


def verify_export(qmodel: ModelWrapper, model: Net, x: torch.Tensor, atol: float = 1e-4) -> dict:
    """QONNX vs PyTorch on a batch: max abs error and prediction agreement; raises above atol.

    PyTorch runs frame by frame, like the QONNX execution: a batched convolution sums in another
    order, and a last-bit float difference can flip a quantizer's rounding by one level.
    """
    with torch.no_grad():
        ref = torch.cat([model.eval()(frame[None]) for frame in x]).numpy()
    got = qonnx_outputs(qmodel, x)
    err = float(np.abs(got - ref).max())
    scale = float(np.abs(ref).max()) or 1.0
    result = {
        "frames": len(x),
        "max_abs_error": err,
        "max_rel_error": err / scale,
        "prediction_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
    }
    log.info("QONNX vs PyTorch on %d frames: max abs error %.3g", len(x), err)
    if err > atol * scale:
        raise VerificationError(
            f"QONNX export differs from PyTorch: max abs error {err:.3g} > {atol * scale:.3g} "
            f"(relative tolerance {atol}) on {len(x)} frames"
        )
    return result
