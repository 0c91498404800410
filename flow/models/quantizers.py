"""The seed methods' quantizers: qsparse's moving-average Brevitas quantizers and DFQ's relaxed
per-layer bit-width mixture.

qsparse ("Learning Low-Precision Structured Subnetworks Using Joint Layerwise Channel Pruning
and Uniform Quantization"), as Brevitas quantizers (injectors whose `tensor_quant` is a module
below), so they export to QONNX `Quant` nodes like every other Brevitas quantizer:
- Algorithm 2, activations (`MovingAverageUintAct`): asymmetric, per tensor. At training step t
  (t = 0, 1, ... counts the batches seen in training mode, calibration included)
      l(t+1) = (l(t)·t + min h) / (t+1),   u(t+1) = (u(t)·t + max h) / (t+1)
      s = (u(t+1) - l(t+1)) / 2^b,   z = round(-l(t+1) / s),   ĥ = clip(round(h/s) + z; 0, 2^b - 1)
  the paper's exact form (s divides by 2^b, not 2^b - 1: the top level is u - s). The output is
  the de-quantised s·(ĥ - z). In eval mode the bounds are frozen.
- Algorithm 3, weights (`MovingAverageIntWeightPerChannel`): symmetric, per output channel c,
      m_c(t+1) = (m_c(t)·t + max|w_c|) / (t+1),   s_c = m_c(t+1) / (2^(b-1) - 1),
      ŵ = clip(round(w/s_c); -(2^(b-1) - 1), 2^(b-1) - 1)
  (the seed text gives only the algorithm's caption; narrow range, as FINN's signed weights and
  densiflow's other weight quantizers use, so m_c maps to the top level).
Rounding is straight-through (Brevitas' RoundSte); the bounds are statistics, not learned.
Before any training step an eval-mode call uses the tensor's own bounds (without storing them).

Zero points in FINN: Brevitas exports `z` as the Quant node's zeropt input, and FINN's
ConvertQONNXtoFINN refuses any nonzero zeropt (its three Quant handlers check `zeropt == 0`).
`ExtractZeroPoints` rewrites such a node exactly as  Add(-s·z) ∘ Quant(zeropt 0) ∘ Add(s·z):
clip(round(h/s) + z; 0, 2^b-1) - z = clip(round((h + s·z)/s); 0, 2^b-1) - z for integer z. FINN's
streamlining absorbs the Add before the quantizer into the MultiThreshold's thresholds (the zero
point ends up in the thresholds) and moves the Add after it into the next layer's thresholds.
After a ReLU (qsparse's placement) min h = 0 in every batch, so l = 0 and z = 0.

DFQ ("Differentiable Fine-grained Quantization for Deep Neural Network Compression"), the
relaxation of Eq. (1): `BitMixture` holds one float layer, one BatchNorm per candidate bit-width
b_j and the logits α_i; its output is
      q_i = Σ_j softmax(α_i)_j · B_j(layer(x; Q_{b_j}(w)))
with Q_b the per-tensor symmetric weight quantizer of the discrete network (`fake_quant_weight`:
scale max|w| / (2^(b-1) - 1), narrow range; at b = 1 sign(w)·mean|w|, the l2-best binary scale,
so the branches' outputs have comparable magnitudes where no BatchNorm follows).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from brevitas.core.function_wrapper import Identity
from brevitas.core.quant import IntQuant
from brevitas.quant import Int8WeightPerTensorFloat, Uint8ActPerTensorFloat
from torch import nn

__all__ = [
    "BitMixture",
    "MovingAverageAsymQuant",
    "MovingAverageIntWeightPerChannel",
    "MovingAverageSymQuant",
    "MovingAverageUintAct",
    "asym_scale_zero_point",
    "expected_cost",
    "fake_quant_weight",
    "running_mean",
]


def running_mean(mean: torch.Tensor, value: torch.Tensor, t: int) -> torch.Tensor:
    """The cumulative moving average after step t: (mean·t + value) / (t + 1)."""
    return (mean * t + value) / (t + 1)


def asym_scale_zero_point(lower: torch.Tensor, upper: torch.Tensor,
                          bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 2, lines 3-4: s = (u - l) / 2^b, z = round(-l / s)."""
    scale = torch.clamp((upper - lower) / 2**bits, min=1e-10)
    return scale, torch.round(-lower / scale)


class _MovingAverage(nn.Module):
    """Shared state of the two moving-average quantizers: the step counter t and the rounding."""

    def __init__(self, bit_width: int, signed: bool, narrow_range: bool):
        super().__init__()
        self.bits = int(bit_width)
        self.int_quant = IntQuant(narrow_range=narrow_range, signed=signed,
                                  input_view_impl=Identity())
        self.observer_only = False  # set by Brevitas' calibration_mode: statistics only
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def _bit_width(self, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(float(self.bits), dtype=like.dtype, device=like.device)

    def _advance(self) -> int:
        """The step index t of this update (then t + 1 steps have been seen)."""
        t = int(self.steps)
        self.steps += 1
        return t


class MovingAverageAsymQuant(_MovingAverage):
    """Algorithm 2: asymmetric per-tensor quantization with moving-average bounds (l, u)."""

    def __init__(self, bit_width: int):
        super().__init__(bit_width, signed=False, narrow_range=False)
        self.register_buffer("lower", torch.zeros(()))
        self.register_buffer("upper", torch.zeros(()))

    def bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(l, u): updated with x in training mode, frozen in eval mode (x's own before a step)."""
        low, high = x.detach().min(), x.detach().max()
        if self.training:
            t = self._advance()
            self.lower.copy_(running_mean(self.lower, low, t))
            self.upper.copy_(running_mean(self.upper, high, t))
        elif int(self.steps) == 0:
            return low, high
        return self.lower, self.upper

    def forward(self, x: torch.Tensor):
        scale, zero_point = asym_scale_zero_point(*self.bounds(x), self.bits)
        bit_width = self._bit_width(x)
        y = x if self.observer_only else self.int_quant(scale, zero_point, bit_width, x)
        return y, scale, zero_point, bit_width


class MovingAverageSymQuant(_MovingAverage):
    """Algorithm 3: symmetric per-output-channel quantization with a moving-average max |w_c|."""

    def __init__(self, bit_width: int, scaling_per_output_channel_shape: tuple[int, ...]):
        super().__init__(bit_width, signed=True, narrow_range=True)
        self.shape = tuple(scaling_per_output_channel_shape)  # (C, 1, ...) like the weight
        self.register_buffer("max_abs", torch.zeros(self.shape))

    def channel_max(self, w: torch.Tensor) -> torch.Tensor:
        """m_c: updated with max|w_c| in training, frozen in eval mode (w's own before a step)."""
        current = w.detach().abs().flatten(1).amax(1).view(self.shape)
        if self.training:
            self.max_abs.copy_(running_mean(self.max_abs, current, self._advance()))
        elif int(self.steps) == 0:
            return current
        return self.max_abs

    def forward(self, w: torch.Tensor):
        scale = torch.clamp(self.channel_max(w) / (2 ** (self.bits - 1) - 1), min=1e-10)
        zero_point = torch.zeros((), dtype=w.dtype, device=w.device)
        bit_width = self._bit_width(w)
        return self.int_quant(scale, zero_point, bit_width, w), scale, zero_point, bit_width


class MovingAverageUintAct(Uint8ActPerTensorFloat):
    """Brevitas activation quantizer of Algorithm 2 (QuantReLU/QuantIdentity, bit_width=b)."""

    tensor_quant = MovingAverageAsymQuant


class MovingAverageIntWeightPerChannel(Int8WeightPerTensorFloat):
    """Brevitas weight quantizer of Algorithm 3 (use with weight_bit_width=b)."""

    scaling_per_output_channel = True
    tensor_quant = MovingAverageSymQuant


# ----------------------------------------------------------------------------- DFQ's relaxation


def fake_quant_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Q_b(w): per-tensor symmetric narrow-range b-bit weights (b = 1: sign(w)·mean|w|), STE."""
    if bits == 1:
        q = torch.where(w >= 0, 1.0, -1.0) * w.detach().abs().mean()
    else:
        levels = 2 ** (bits - 1) - 1
        scale = torch.clamp(w.detach().abs().max() / levels, min=1e-10)
        q = torch.clamp(torch.round(w / scale), -levels, levels) * scale
    return w + (q - w).detach()  # straight-through: forward q, gradient of the identity


class BitMixture(nn.Module):
    """Eq. (1): q_i = Σ_j softmax(α_i)_j · B_j(layer(x; Q_{b_j}(w))), a BatchNorm per candidate."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, candidates: Sequence[int], norm: bool):
        super().__init__()
        self.layer = layer
        self.candidates = tuple(int(b) for b in candidates)
        self.alpha = nn.Parameter(torch.zeros(len(self.candidates)))
        out = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
        bn = nn.BatchNorm2d if isinstance(layer, nn.Conv2d) else nn.BatchNorm1d
        self.norms = nn.ModuleList([bn(out) for _ in self.candidates]) if norm else None

    def probabilities(self) -> torch.Tensor:
        """softmax(α_i) over the candidates."""
        return torch.softmax(self.alpha, dim=0)

    def branch(self, x: torch.Tensor, j: int) -> torch.Tensor:
        """B_j(layer(x; Q_{b_j}(w))): candidate j's output."""
        w = fake_quant_weight(self.layer.weight, self.candidates[j])
        if isinstance(self.layer, nn.Conv2d):
            y = nn.functional.conv2d(x, w, None, self.layer.stride, self.layer.padding,
                                     groups=self.layer.groups)  # depthwise: groups = channels
        else:
            y = nn.functional.linear(x, w)
        return self.norms[j](y) if self.norms is not None else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.probabilities()
        return sum(p[j] * self.branch(x, j) for j in range(len(self.candidates)))

    def chosen(self) -> int:
        """Index of the most probable candidate (the discretisation: argmax α_i)."""
        return int(torch.argmax(self.alpha.detach()))


def expected_cost(mixtures: Sequence[BitMixture], costs: Sequence[Sequence[float]]) -> torch.Tensor:
    """G(α) = Σ_i Σ_j softmax(α_i)_j · cost_i(b_j): the expected cost of the relaxed network."""
    total = torch.zeros(())
    for mix, layer_costs in zip(mixtures, costs):
        total = total + (mix.probabilities() * torch.tensor(layer_costs, dtype=torch.float32)).sum()
    return total
