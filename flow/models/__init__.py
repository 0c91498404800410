"""FINN-compatible Brevitas network builders: architectures, plan application, channel surgery."""
from flow.models.build import Net, build_float, build_quant, calibrate, graph_ops, transfer_weights
from flow.models.ptq import ptq_model, qat_model
from flow.models.zoo import (
    ARCHITECTURES,
    INPUT,
    Architecture,
    LayerGeometry,
    LayerSpec,
    OpSpec,
    get_architecture,
)

__all__ = [
    "ARCHITECTURES",
    "INPUT",
    "Architecture",
    "LayerGeometry",
    "LayerSpec",
    "Net",
    "OpSpec",
    "build_float",
    "build_quant",
    "calibrate",
    "get_architecture",
    "graph_ops",
    "ptq_model",
    "qat_model",
    "transfer_weights",
]
