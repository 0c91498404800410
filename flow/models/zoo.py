"""Architectures as data, and the per-layer geometry a plan gives them.

Every architecture here converts to an all-RTL FINN dataflow: convolutions only (no pooling,
which FINN implements in HLS alone), spatial size brought to 1x1 by the last convolution so the
flatten before the classifier is trivial, BatchNorm + ReLU after each hidden layer (absorbed into
thresholds), and a bias-free classifier.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from flow.core.errors import ConfigError
from flow.recipe.plan import DEFAULT_QUANTIZER, CompressionPlan


@dataclass(frozen=True)
class LayerSpec:
    """One quantizable layer of an architecture at full width."""

    name: str
    kind: Literal["conv", "linear"]
    out: int
    kernel: int = 1
    stride: int = 1
    padding: int = 0


@dataclass(frozen=True)
class LayerGeometry:
    """A layer's sizes under a plan: what weight and activation memory are computed from."""

    name: str
    kind: str
    in_ch: int
    out_ch: int
    kernel: int
    out_hw: int  # output height = width (1 for linear layers)
    in_hw: int

    @property
    def params(self) -> int:
        """Weight count (no bias: BatchNorm follows every hidden layer)."""
        return self.out_ch * self.in_ch * self.kernel * self.kernel

    @property
    def out_elems(self) -> int:
        """Output activation elements per frame."""
        return self.out_ch * self.out_hw * self.out_hw

    @property
    def macs(self) -> int:
        """Multiply-accumulates per frame."""
        return self.params * self.out_hw * self.out_hw


@dataclass(frozen=True)
class Architecture:
    """A named network: input shape, layers (the last is the classifier), classes."""

    name: str
    in_shape: tuple[int, int, int]
    layers: tuple[LayerSpec, ...]

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def num_classes(self) -> int:
        return self.layers[-1].out

    def geometry(self, plan: CompressionPlan | None = None) -> list[LayerGeometry]:
        """Per-layer sizes with the plan's kept channels applied (full width without a plan)."""
        in_ch, hw = self.in_shape[0], self.in_shape[1]
        out = []
        for spec in self.layers:
            keep = plan.layers[spec.name].keep if plan else None
            out_ch = len(keep) if keep is not None else spec.out
            if spec.kind == "conv":
                out_hw = (hw + 2 * spec.padding - spec.kernel) // spec.stride + 1
                out.append(LayerGeometry(spec.name, "conv", in_ch, out_ch, spec.kernel, out_hw, hw))
            else:
                out.append(LayerGeometry(spec.name, "linear", in_ch * hw * hw, out_ch, 1, 1, 1))
                out_hw = 1
            in_ch, hw = out_ch, out_hw
        return out

    def uniform_plan(self, weight_bits: int, act_bits: int, input_bits: int,
                     quantizer: str = DEFAULT_QUANTIZER) -> CompressionPlan:
        """Every layer at the same precision and quantizer, all channels kept."""
        last = self.layers[-1].name
        layers = {
            name: {"weight_bits": weight_bits, "act_bits": None if name == last else act_bits,
                   "quantizer": quantizer}
            for name in self.layer_names
        }
        return CompressionPlan.from_dict({"input_bits": input_bits, "layers": layers})

    def check_plan(self, plan: CompressionPlan, source: str = "plan") -> None:
        """Raise ConfigError unless the plan names exactly this architecture's layers, sensibly;
        the message starts with `source` (the plan file, where there is one)."""
        missing = [n for n in self.layer_names if n not in plan.layers]
        extra = [n for n in plan.layers if n not in self.layer_names]
        if missing or extra:
            raise ConfigError(
                f"{source} does not fit architecture '{self.name}': "
                + (f"layers {extra} do not exist; " if extra else "")
                + (f"layers {missing} are missing; " if missing else "")
                + f"its layers are {self.layer_names}"
            )
        for spec in self.layers:
            lp, where = plan.layers[spec.name], f"{source}: layers.{spec.name}"
            is_classifier = spec is self.layers[-1]
            if is_classifier and lp.act_bits is not None:
                raise ConfigError(f"{where}.act_bits: the classifier output is not requantized; "
                                  "set it to null")
            if not is_classifier and lp.act_bits is None:
                raise ConfigError(f"{where}.act_bits: required (1..8)")
            if lp.keep is not None:
                if is_classifier and len(lp.keep) != spec.out:
                    raise ConfigError(f"{where}.keep: the classifier keeps all classes")
                if max(lp.keep) >= spec.out:
                    raise ConfigError(f"{where}.keep: channel {max(lp.keep)} does not exist; "
                                      f"the layer has channels 0..{spec.out - 1}")
        last_conv_hw = [g.out_hw for g in self.geometry() if g.kind == "conv"]
        if last_conv_hw and last_conv_hw[-1] < 1:
            raise ConfigError(f"architecture '{self.name}': spatial size shrinks below 1")


def _conv(name: str, out: int, k: int, s: int = 1, p: int = 0) -> LayerSpec:
    return LayerSpec(name, "conv", out, k, s, p)


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        # 8x8 digits: 8 -pad-> 8 -> 6 -> 4 -> 1
        Architecture(
            "digits_cnn",
            (1, 8, 8),
            (
                _conv("conv1", 16, 3, p=1),
                _conv("conv2", 32, 3),
                _conv("conv3", 32, 3),
                _conv("conv4", 64, 4),
                LayerSpec("fc1", "linear", 10),
            ),
        ),
        # LeNet-style for 28x28 MNIST, strided convolutions instead of pooling: 28 -> 12 -> 4 -> 1
        Architecture(
            "lenet",
            (1, 28, 28),
            (
                _conv("conv1", 16, 5, s=2),
                _conv("conv2", 32, 5, s=2),
                _conv("conv3", 64, 4),
                LayerSpec("fc1", "linear", 64),
                LayerSpec("fc2", "linear", 10),
            ),
        ),
        # CNV-style for 32x32 CIFAR-10: 32 -> 30 -> 28 -> 13 -> 11 -> 5 -> 3 -> 1
        Architecture(
            "cnv",
            (3, 32, 32),
            (
                _conv("conv1", 64, 3),
                _conv("conv2", 64, 3),
                _conv("conv3", 128, 3, s=2),
                _conv("conv4", 128, 3),
                _conv("conv5", 256, 3, s=2),
                _conv("conv6", 256, 3),
                _conv("conv7", 256, 3),
                LayerSpec("fc1", "linear", 512),
                LayerSpec("fc2", "linear", 10),
            ),
        ),
    )
}


def get_architecture(name: str) -> Architecture:
    """Look up an architecture by name; the error lists the known ones."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ConfigError(
            f"model.arch: unknown architecture '{name}'; allowed: {sorted(ARCHITECTURES)}"
        ) from None
