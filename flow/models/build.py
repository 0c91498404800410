"""Apply a plan to an architecture: float and Brevitas networks, channel surgery, calibration."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from brevitas.graph.calibrate import calibration_mode
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import (
    Int8WeightPerTensorFloat,
    SignedBinaryWeightPerTensorConst,
    Uint8ActPerTensorFloat,
)
from torch import nn

from flow.core.errors import ModelError
from flow.models.quantizers import MovingAverageIntWeightPerChannel, MovingAverageUintAct
from flow.models.zoo import Architecture
from flow.recipe.plan import CompressionPlan, LayerPlan

# LayerPlan.quantizer -> Brevitas quantizer of the layer's weights and of its output activation
WEIGHT_QUANT = {"default": Int8WeightPerTensorFloat,
                "moving_average": MovingAverageIntWeightPerChannel}
ACT_QUANT = {"default": Uint8ActPerTensorFloat, "moving_average": MovingAverageUintAct}


class Net(nn.Module):
    """Input scaling + quantizer, then one block per plan layer (layer, BatchNorm, ReLU)."""

    def __init__(self, arch: Architecture, pixel_max: float, input_quant: nn.Module,
                 blocks: dict[str, nn.Sequential]):
        super().__init__()
        self.arch = arch
        self.pixel_max = float(pixel_max)
        self.input_quant = input_quant
        self.blocks = nn.ModuleDict(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quant(x / self.pixel_max)  # raw integer pixels in; a Mul in the ONNX graph
        for spec in self.arch.layers:
            if spec.kind == "linear":
                x = x.flatten(1)
            x = self.blocks[spec.name](x)
        return x


def build_float(arch: Architecture, pixel_max: float,
                plan: CompressionPlan | None = None) -> Net:
    """The float network (the baseline to train), at full width or with a plan's kept channels."""
    return _build(arch, pixel_max, plan, quant=False)


def build_quant(arch: Architecture, pixel_max: float, plan: CompressionPlan) -> Net:
    """The Brevitas network for a plan: per-layer weight/activation bits, kept channels removed."""
    arch.check_plan(plan)
    return _build(arch, pixel_max, plan, quant=True)


def _build(arch: Architecture, pixel_max: float, plan: CompressionPlan | None, quant: bool) -> Net:
    blocks = {}
    for spec, geo in zip(arch.layers, arch.geometry(plan)):
        lp = plan.layers[spec.name] if plan else None
        if spec.kind == "conv":
            args = (geo.in_ch, geo.out_ch, spec.kernel)
            kw = dict(stride=spec.stride, padding=spec.padding, bias=False)
            layer = QuantConv2d(*args, **kw, **_weight_quant(lp)) if quant \
                else nn.Conv2d(*args, **kw)
            norm: nn.Module = nn.BatchNorm2d(geo.out_ch)
        else:
            args = (geo.in_ch, geo.out_ch)
            layer = QuantLinear(*args, bias=False, **_weight_quant(lp)) if quant \
                else nn.Linear(*args, bias=False)
            norm = nn.BatchNorm1d(geo.out_ch)
        if spec is arch.layers[-1]:
            blocks[spec.name] = nn.Sequential(layer)
        else:
            act = QuantReLU(act_quant=ACT_QUANT[lp.quantizer], bit_width=lp.act_bits) if quant \
                else nn.ReLU()
            blocks[spec.name] = nn.Sequential(layer, norm, act)
    input_quant = (
        QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=plan.input_bits)
        if quant else nn.Identity()
    )
    return Net(arch, pixel_max, input_quant, blocks)


def _weight_quant(lp: LayerPlan) -> dict:
    """Brevitas weight quantizer of a layer: signed narrow-range integers, binary at 1 bit."""
    if lp.weight_bits == 1:
        return {"weight_quant": SignedBinaryWeightPerTensorConst}
    return {"weight_quant": WEIGHT_QUANT[lp.quantizer], "weight_bit_width": lp.weight_bits}


def _kept(arch: Architecture, plan: CompressionPlan | None, name: str) -> list[int]:
    spec = next(s for s in arch.layers if s.name == name)
    keep = plan.layers[name].keep if plan else None
    return list(keep) if keep is not None else list(range(spec.out))


def transfer_weights(src: Net, src_plan: CompressionPlan | None, dst: Net,
                     dst_plan: CompressionPlan | None) -> Net:
    """Copy layer and BatchNorm parameters from src into dst, keeping only dst's channels.

    Channel surgery: the kept output channels of each layer and the matching input channels of
    the next are sliced out physically. dst's channels must be a subset of src's. Quantizer
    state is not copied: calibrate dst afterwards.
    """
    arch = dst.arch
    in_pos: list[int] | None = None  # positions of dst's input features within src's
    for spec, geo in zip(arch.layers, arch.geometry(dst_plan)):
        src_keep, dst_keep = _kept(arch, src_plan, spec.name), _kept(arch, dst_plan, spec.name)
        missing = sorted(set(dst_keep) - set(src_keep))
        if missing:
            raise ModelError(f"layer {spec.name}: channels {missing} were already removed")
        out_pos = [src_keep.index(c) for c in dst_keep]
        src_block, dst_block = src.blocks[spec.name], dst.blocks[spec.name]
        w = src_block[0].weight.detach()[out_pos]
        if in_pos is not None:
            # a linear layer after a convolution sees channel-major flattened (NCHW) features
            spatial = geo.in_ch // len(in_pos) if spec.kind == "linear" else 1
            w = w[:, [c * spatial + j for c in in_pos for j in range(spatial)]]
        with torch.no_grad():
            dst_block[0].weight.copy_(w)
            if len(dst_block) > 1:
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(dst_block[1], key).copy_(getattr(src_block[1], key).detach()[out_pos])
        in_pos = out_pos
    return dst


@torch.no_grad()
def calibrate(model: Net, batches: Iterable[torch.Tensor]) -> Net:
    """Set activation-quantizer scales from data (BatchNorm statistics untouched)."""
    model.eval()
    with calibration_mode(model):
        for x in batches:
            model(x)
    model.eval()
    return model
