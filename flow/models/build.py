"""Apply a plan to an architecture: float and Brevitas networks, channel surgery, calibration.

Quantized structure per node kind (what FINN streamlines; flow.finn's rewrites match it):
- layer: Quant{Conv2d,Linear} (depthwise: groups = channels), BatchNorm, then its activation:
  relu -> QuantReLU; relu6 -> QuantReLU with a constant scale 6/(2^b - 1) (the clip at 6 is the
  quantizer's saturation); hardtanh -> QuantHardTanh with a constant scale 1/(2^(b-1) - 1),
  narrow range (the clip at ±1); leaky_relu -> nn.LeakyReLU(LEAKY_SLOPE), then a signed
  QuantIdentity; none (feeds adds only) -> nothing: the add quantizes it;
- add: ONE signed QuantIdentity (bits = act_bits of the add's main-branch layer) applied to both
  inputs, the sum, then a QuantReLU at the same bits where act = relu;
- maxpool / avgpool: nn.MaxPool2d / nn.AvgPool2d on the quantized activations; gap:
  nn.AdaptiveAvgPool2d(1); flatten (and the flatten before a linear layer): x.flatten(1).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from brevitas.graph.calibrate import calibration_mode
from brevitas.nn import QuantConv2d, QuantHardTanh, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import (
    Int8ActPerTensorFloat,
    Int8ActPerTensorFloatMinMaxInit,
    Int8WeightPerTensorFloat,
    SignedBinaryWeightPerTensorConst,
    Uint8ActPerTensorFloat,
    Uint8ActPerTensorFloatMaxInit,
)
from torch import nn

from flow.core.errors import ModelError
from flow.models.graph import INPUT, Architecture, LayerSpec, OpSpec
from flow.models.quantizers import MovingAverageIntWeightPerChannel, MovingAverageUintAct
from flow.recipe.plan import CompressionPlan, LayerPlan

# LayerPlan.quantizer -> Brevitas quantizer of the layer's weights and of its output activation
WEIGHT_QUANT = {"default": Int8WeightPerTensorFloat,
                "moving_average": MovingAverageIntWeightPerChannel}
ACT_QUANT = {"default": Uint8ActPerTensorFloat, "moving_average": MovingAverageUintAct}
LEAKY_SLOPE = 0.01  # torch's default negative slope, the one densiflow deploys


class Blocks(nn.ModuleDict):
    """A ModuleDict keyed by node names, dots included (`layer2.0.conv1`; stored as
    `layer2/0/conv1`, since torch forbids dots in module names)."""

    def __init__(self, modules: dict[str, nn.Module]):
        super().__init__({_key(k): v for k, v in modules.items()})

    def __getitem__(self, name: str) -> nn.Module:
        return super().__getitem__(_key(name))

    def __contains__(self, name: str) -> bool:
        return super().__contains__(_key(name))

    def keys(self):
        return [k.replace("/", ".") for k in super().keys()]

    def items(self):
        return list(zip(self.keys(), self.values()))

    def __iter__(self):
        return iter(self.keys())


def _key(name: str) -> str:
    return name.replace(".", "/")


class Add(nn.Module):
    """A residual add: both inputs through one quantizer (shared scale), the sum, the act."""

    def __init__(self, quant: nn.Module, act: nn.Module):
        super().__init__()
        self.quant, self.act = quant, act

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.act(self.quant(a) + self.quant(b))


class Net(nn.Module):
    """Input scaling + quantizer, then the architecture's nodes: one block per plan layer
    (layer, BatchNorm, activation) in `blocks`, the weightless nodes in `ops`."""

    def __init__(self, arch: Architecture, pixel_max: float, input_quant: nn.Module,
                 blocks: dict[str, nn.Module], ops: dict[str, nn.Module] | None = None):
        super().__init__()
        self.arch = arch
        self.pixel_max = float(pixel_max)
        self.input_quant = input_quant
        self.blocks = Blocks(blocks)
        self.ops = Blocks(graph_ops(arch) if ops is None else ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {INPUT: self.input_quant(x / self.pixel_max)}  # raw integer pixels in
        arch = self.arch
        for node in arch.nodes:
            ins = [values[i] for i in arch.inputs_of(node.name)]
            if isinstance(node, LayerSpec):
                flat = node.kind == "linear" and ins[0].dim() > 2  # one Flatten in the export
                h = ins[0].flatten(1) if flat else ins[0]
                values[node.name] = self.blocks[node.name](h)
            else:
                values[node.name] = self.ops[node.name](*ins)
        return values[arch.nodes[-1].name]


class Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def graph_ops(arch: Architecture, plan: CompressionPlan | None = None,
              quant: bool = False) -> dict[str, nn.Module]:
    """The modules of the weightless nodes (quantized adds where `quant`, with the plan's bits)."""
    ops: dict[str, nn.Module] = {}
    for node in arch.nodes:
        if isinstance(node, LayerSpec):
            continue
        if node.kind == "add":
            ops[node.name] = _add(arch, node, plan, quant)
        elif node.kind == "maxpool":
            ops[node.name] = nn.MaxPool2d(node.kernel, node.stride, node.padding)
        elif node.kind == "avgpool":
            ops[node.name] = nn.AvgPool2d(node.kernel, node.stride, node.padding)
        elif node.kind == "gap":
            ops[node.name] = nn.AdaptiveAvgPool2d(1)
        else:
            ops[node.name] = Flatten()
    return ops


def _add(arch: Architecture, node: OpSpec, plan: CompressionPlan | None, quant: bool) -> Add:
    if not quant:
        return Add(nn.Identity(), nn.ReLU() if node.act else nn.Identity())
    bits = plan.layers[arch.add_bits_source(node.name)].act_bits
    act = (QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=bits) if node.act
           else nn.Identity())
    return Add(QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=bits), act)


def build_float(arch: Architecture, pixel_max: float,
                plan: CompressionPlan | None = None) -> Net:
    """The float network (the baseline to train), at full width or with a plan's kept channels."""
    if plan is not None:
        arch.check_plan(plan)
    return _build(arch, pixel_max, plan, quant=False)


def build_quant(arch: Architecture, pixel_max: float, plan: CompressionPlan) -> Net:
    """The Brevitas network for a plan: per-layer weight/activation bits, kept channels removed."""
    arch.check_plan(plan)
    return _build(arch, pixel_max, plan, quant=True)


def _build(arch: Architecture, pixel_max: float, plan: CompressionPlan | None, quant: bool) -> Net:
    blocks = {}
    for spec, geo in zip(arch.layers, arch.geometry(plan)):
        lp = plan.layers[spec.name] if plan else None
        wq = _weight_quant(lp) if quant else {}
        if spec.kind == "conv":
            conv = QuantConv2d if quant else nn.Conv2d
            layer = conv(geo.in_ch, geo.out_ch, spec.kernel, stride=spec.stride,
                         padding=spec.padding, groups=geo.groups, bias=False, **wq)
            norm: nn.Module = nn.BatchNorm2d(geo.out_ch)
        else:
            layer = (QuantLinear if quant else nn.Linear)(geo.in_ch, geo.out_ch, bias=False, **wq)
            norm = nn.BatchNorm1d(geo.out_ch)
        if spec is arch.layers[-1]:
            blocks[spec.name] = nn.Sequential(layer)
        elif spec.act is None:
            blocks[spec.name] = nn.Sequential(layer, norm)
        else:
            blocks[spec.name] = nn.Sequential(layer, norm, *activation(spec.act, lp, quant))
    input_quant = (
        QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=plan.input_bits)
        if quant else nn.Identity()
    )
    return Net(arch, pixel_max, input_quant, blocks, graph_ops(arch, plan, quant))


def activation(act: str, lp: LayerPlan | None, quant: bool) -> list[nn.Module]:
    """A layer's activation modules: float, or quantized at the plan's act_bits."""
    if not quant:
        return [{"relu": nn.ReLU, "relu6": nn.ReLU6, "hardtanh": nn.Hardtanh,
                 "leaky_relu": lambda: nn.LeakyReLU(LEAKY_SLOPE)}[act]()]
    bits = lp.act_bits
    if act == "relu":
        return [QuantReLU(act_quant=ACT_QUANT[lp.quantizer], bit_width=bits)]
    if act == "relu6":
        return [QuantReLU(act_quant=Uint8ActPerTensorFloatMaxInit, bit_width=bits, max_val=6.0,
                          scaling_impl_type="const")]
    if act == "hardtanh":
        return [QuantHardTanh(act_quant=Int8ActPerTensorFloatMinMaxInit, bit_width=bits,
                              min_val=-1.0, max_val=1.0, narrow_range=True,
                              scaling_impl_type="const")]
    return [nn.LeakyReLU(LEAKY_SLOPE), QuantIdentity(act_quant=Int8ActPerTensorFloat,
                                                     bit_width=bits)]


def _weight_quant(lp: LayerPlan) -> dict:
    """Brevitas weight quantizer of a layer: signed narrow-range integers, binary at 1 bit."""
    if lp.weight_bits == 1:
        return {"weight_quant": SignedBinaryWeightPerTensorConst}
    return {"weight_quant": WEIGHT_QUANT[lp.quantizer], "weight_bit_width": lp.weight_bits}


def transfer_weights(src: Net, src_plan: CompressionPlan | None, dst: Net,
                     dst_plan: CompressionPlan | None) -> Net:
    """Copy layer and BatchNorm parameters from src into dst, keeping only dst's channels.

    Channel surgery over the graph: each layer's kept output channels are sliced out, and its
    input channels are the kept channels of `arch.channel_source` (through pools and adds; a
    linear layer after a convolution sees them channel-major flattened, NCHW); a depthwise
    layer's filters follow its channels. dst's channels must be a subset of src's. Quantizer
    state is not copied: calibrate dst afterwards.
    """
    arch = dst.arch
    shapes = arch.shapes(dst_plan)
    # positions of each tensor's dst channels within src's (None: the network input, all)
    pos: dict[str, list[int] | None] = {INPUT: None}
    for node in arch.nodes:
        ins = arch.inputs_of(node.name)
        if isinstance(node, OpSpec):
            pos[node.name] = _flat(pos[ins[0]], shapes[ins[0]].hw) if node.kind == "flatten" \
                else pos[ins[0]]
            continue
        out_pos = _positions(arch, src_plan, dst_plan, node.name)
        in_pos = pos[ins[0]]
        if node.kind == "linear" and in_pos is not None:
            in_pos = _flat(in_pos, shapes[ins[0]].hw)
        w = src.blocks[node.name][0].weight.detach()[out_pos]
        if in_pos is not None and not node.depthwise:
            w = w[:, in_pos]
        src_block, dst_block = src.blocks[node.name], dst.blocks[node.name]
        with torch.no_grad():
            dst_block[0].weight.copy_(w)
            if len(dst_block) > 1:
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(dst_block[1], key).copy_(getattr(src_block[1], key).detach()[out_pos])
        pos[node.name] = out_pos
    return dst


def _positions(arch: Architecture, src_plan: CompressionPlan | None,
               dst_plan: CompressionPlan | None, name: str) -> list[int]:
    src_keep, dst_keep = arch.kept(src_plan, name), arch.kept(dst_plan, name)
    missing = sorted(set(dst_keep) - set(src_keep))
    if missing:
        raise ModelError(f"layer {name}: channels {missing} were already removed")
    return [src_keep.index(c) for c in dst_keep]


def _flat(channels: list[int] | None, hw: int) -> list[int] | None:
    """Flattened (NCHW) feature positions of kept channels on an hw x hw map."""
    if channels is None:
        return None
    spatial = hw * hw
    return [c * spatial + j for c in channels for j in range(spatial)]


@torch.no_grad()
def calibrate(model: Net, batches: Iterable[torch.Tensor]) -> Net:
    """Set activation-quantizer scales from data (BatchNorm statistics untouched)."""
    model.eval()
    with calibration_mode(model):
        for x in batches:
            model(x)
    model.eval()
    return model
