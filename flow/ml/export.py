"""Brevitas -> QONNX export, cleaned up, with the input's integer type set and verified."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from brevitas.export import export_qonnx
from onnx import StringStringEntryProto
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.util.cleanup import cleanup_model
from torch import nn

from flow.core.errors import VerificationError
from flow.finn.rewrites import ORIGIN
from flow.models import INPUT, Architecture, Net

log = logging.getLogger(__name__)


def export_model(model: nn.Module, in_shape: tuple[int, ...], input_bits: int,
                 path: Path) -> ModelWrapper:
    """Export to QONNX at `path` (batch 1); the input is annotated UINT<input_bits>; in a Net's
    export every node records the network node it belongs to (`flow.finn.rewrites.origin`, e.g.
    "Conv_5 (layer2.0.conv1)"), so FINN's messages name module paths."""
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    export_qonnx(model, input_t=torch.zeros(1, *in_shape), export_path=str(tmp), dynamo=False)
    raw = ModelWrapper(str(tmp))
    for node in raw.graph.node if isinstance(model, Net) else ():
        if (owner := network_node(model.arch, node.name)) is not None:
            node.metadata_props.append(StringStringEntryProto(key=ORIGIN, value=owner))
    qmodel = cleanup_model(raw)
    for node in qmodel.graph.node:  # cleanup renamed the nodes: "<new name> (<network node>)"
        for prop in node.metadata_props:
            if prop.key == ORIGIN:
                prop.value = f"{node.name} ({prop.value})"
    qmodel.set_tensor_datatype(qmodel.graph.input[0].name, DataType[f"UINT{input_bits}"])
    qmodel.save(str(tmp))
    tmp.replace(path)
    return ModelWrapper(str(path))


def network_node(arch: Architecture, onnx_name: str) -> str | None:
    """The architecture node (or INPUT, the input quantizer) an exported ONNX node belongs to,
    read from its torch scope name (`/layer2/0/conv1/...`: ModuleDict keys keep dots as '/')."""
    scopes = {"input_quant": INPUT, **{n.name.replace(".", "/"): n.name for n in arch.nodes}}
    found = [s for s in scopes if onnx_name.startswith(f"/{s}/")]
    return scopes[max(found, key=len)] if found else None


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
