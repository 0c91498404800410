"""FINN-compatible Brevitas network builders: architectures, plan application, channel surgery."""
from flow.models.build import Net, build_float, build_quant, calibrate, transfer_weights
from flow.models.ptq import ptq_model, qat_model
from flow.models.zoo import ARCHITECTURES, Architecture, LayerGeometry, LayerSpec, get_architecture

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "LayerGeometry",
    "LayerSpec",
    "Net",
    "build_float",
    "build_quant",
    "calibrate",
    "get_architecture",
    "ptq_model",
    "qat_model",
    "transfer_weights",
]
