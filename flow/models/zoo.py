"""densiflow's architectures as data (the node types and queries are flow.models.graph).

Every architecture converts to an all-RTL FINN dataflow with densiflow's RTL custom ops
(hw_models.finn_ops: pooling, stream duplication, residual add, global accumulation): BatchNorm
and a quantized activation after each hidden layer (absorbed into thresholds), a bias-free
classifier. The chains `digits_cnn` and `lenet` use strided convolutions only, and keep their
layer names and figures.
"""
from __future__ import annotations

from flow.core.errors import ConfigError
from flow.models.graph import (
    INPUT,
    Architecture,
    LayerGeometry,
    LayerSpec,
    Node,
    OpSpec,
    Shape,
)

__all__ = ["ARCHITECTURES", "INPUT", "Architecture", "LayerGeometry", "LayerSpec", "Node",
           "OpSpec", "Shape", "get_architecture"]


def _conv(name: str, out: int, k: int, s: int = 1, p: int = 0, act: str | None = "relu",
          inputs: tuple[str, ...] = (), groups: int = 1) -> LayerSpec:
    return LayerSpec(name, "conv", out, k, s, p, groups, act, inputs)


def _fc(name: str, out: int, act: str | None = "relu") -> LayerSpec:
    return LayerSpec(name, "linear", out, act=act)


def _basic_block(prefix: str, inp: str, in_ch: int, out: int, stride: int) -> list[Node]:
    """ResNet's basic block ("Deep Residual Learning for Image Recognition"): 3x3 conv, ReLU,
    3x3 conv, + the shortcut (a 1x1 projection where the shape changes), ReLU."""
    nodes: list[Node] = [_conv(f"{prefix}.conv1", out, 3, stride, 1, inputs=(inp,)),
                         _conv(f"{prefix}.conv2", out, 3, 1, 1, act=None)]
    skip = inp
    if stride != 1 or in_ch != out:
        skip = f"{prefix}.shortcut"
        nodes.append(_conv(skip, out, 1, stride, act=None, inputs=(inp,)))
    nodes.append(OpSpec(f"{prefix}.add", "add", act="relu", inputs=(f"{prefix}.conv2", skip)))
    return nodes


def _resnet(name: str, in_shape: tuple[int, int, int], stem: int,
            stages: list[tuple[int, int, int]], classes: int = 10) -> Architecture:
    """Stem conv, then per stage (channels, blocks, first stride) basic blocks, GAP, classifier."""
    nodes: list[Node] = [_conv("stem", stem, 3, 1, 1)]
    inp, ch = "stem", stem
    for s, (out, blocks, stride) in enumerate(stages, start=1):
        for b in range(blocks):
            nodes += _basic_block(f"layer{s}.{b}", inp, ch, out, stride if b == 0 else 1)
            inp, ch = f"layer{s}.{b}.add", out
    return Architecture(name, in_shape, (*nodes, OpSpec("pool", "gap"), _fc("fc", classes)))


def _separable(prefix: str, ch: int, out: int, stride: int) -> list[Node]:
    """MobileNet's depthwise-separable block ("MobileNets: Efficient Convolutional Neural
    Networks for Mobile Vision Applications"): 3x3 depthwise, ReLU, 1x1 pointwise, ReLU."""
    return [_conv(f"{prefix}.dw", ch, 3, stride, 1, groups=ch), _conv(f"{prefix}.pw", out, 1)]


def _cnv() -> Architecture:
    """FINN's CNV (brevitas_examples.bnn_pynq.models.CNV): 3x3 convolutions of 64, 64, 128,
    128, 256, 256 channels without padding, a 2x2 max-pool after the second and the fourth,
    linear 512, 512 and the classifier: 32 -> 30 -> 28 -> 14 -> 12 -> 10 -> 5 -> 3 -> 1."""
    nodes: list[Node] = []
    for i, (out, pool) in enumerate([(64, False), (64, True), (128, False), (128, True),
                                     (256, False), (256, False)], start=1):
        nodes.append(_conv(f"conv{i}", out, 3))
        if pool:
            nodes.append(OpSpec(f"pool{i // 2}", "maxpool", 2, 2))
    nodes += [_fc("fc1", 512), _fc("fc2", 512), _fc("fc3", 10, act=None)]
    return Architecture("cnv", (3, 32, 32), tuple(nodes))


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
                _fc("fc1", 10, act=None),
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
                _fc("fc1", 64),
                _fc("fc2", 10, act=None),
            ),
        ),
        # VGG-style ("Very Deep Convolutional Networks for Large-Scale Image Recognition") for
        # 8x8 digits: two conv-conv-maxpool blocks, 8 -> 4 -> 2, then the classifier
        Architecture(
            "digits_vgg",
            (1, 8, 8),
            (
                _conv("block1.conv1", 8, 3, p=1), _conv("block1.conv2", 8, 3, p=1),
                OpSpec("block1.pool", "maxpool", 2, 2),
                _conv("block2.conv1", 16, 3, p=1), _conv("block2.conv2", 16, 3, p=1),
                OpSpec("block2.pool", "maxpool", 2, 2),
                _fc("fc", 10, act=None),
            ),
        ),
        # ResNet for 8x8 digits: stem, three basic blocks (the second downsamples 8 -> 4 with a
        # 1x1 projection shortcut), global average pooling, classifier
        _resnet("digits_resnet", (1, 8, 8), 8, [(8, 1, 1), (16, 1, 2), (16, 1, 1)]),
        # MobileNet-v1-style for 8x8 digits: stem, three depthwise-separable blocks (the second
        # strided, 8 -> 4), global average pooling, classifier
        Architecture(
            "digits_mobilenet",
            (1, 8, 8),
            (
                _conv("stem", 8, 3, p=1),
                *_separable("block1", 8, 16, 1),
                *_separable("block2", 16, 32, 2),
                *_separable("block3", 32, 32, 1),
                OpSpec("pool", "gap"),
                _fc("fc", 10, act=None),
            ),
        ),
        _cnv(),
        # ResNet-20 for 3x32x32 CIFAR-shaped data (He et al., Section 4.2): 16-channel stem,
        # three stages of three basic blocks at 16, 32, 64 channels (32 -> 16 -> 8), GAP
        _resnet("resnet20", (3, 32, 32), 16, [(16, 3, 1), (32, 3, 2), (64, 3, 2)]),
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
