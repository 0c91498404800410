"""Networks as DAGs: geometry against closed forms, coupled channel groups, plan checks, the
quantized structure of adds and clipped activations, channel surgery against numpy slicing, a
user's ordinary PyTorch module traced by module path and checked against the module itself, and
QONNX execution of the built graphs against PyTorch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from flow.core.errors import ConfigError
from flow.ml.metrics import plan_metrics
from flow.models import (
    Architecture,
    LayerSpec,
    OpSpec,
    build_float,
    build_quant,
    calibrate,
    get_architecture,
    transfer_weights,
)
from flow.models.custom import architecture_from_module

RESNET = get_architecture("digits_resnet")
MOBILENET = get_architecture("digits_mobilenet")
VGG = get_architecture("digits_vgg")


def _geo(arch, plan=None):
    return {g.name: g for g in arch.geometry(plan)}


def test_resnet_geometry_closed_form():
    g = _geo(RESNET)
    assert (g["stem"].params, g["stem"].out_hw, g["stem"].macs) == (8 * 9, 8, 8 * 9 * 64)
    assert g["layer1.0.conv2"].params == 8 * 8 * 9
    assert (g["layer2.0.conv1"].params, g["layer2.0.conv1"].out_hw) == (16 * 8 * 9, 4)
    assert (g["layer2.0.shortcut"].params, g["layer2.0.shortcut"].out_hw) == (16 * 8, 4)
    assert g["layer3.0.conv2"].macs == 16 * 16 * 9 * 16
    assert (g["fc"].in_ch, g["fc"].params) == (16, 160)  # after global average pooling
    assert sum(x.params for x in g.values()) == 72 + 2 * 576 + 1152 + 2304 + 128 + 2 * 2304 + 160


def test_depthwise_geometry_and_metrics():
    g = _geo(MOBILENET)
    dw = g["block2.dw"]
    assert (dw.in_ch, dw.out_ch, dw.groups, dw.params, dw.out_hw) == (16, 16, 16, 16 * 9, 4)
    assert dw.macs == 16 * 9 * 16
    assert g["block2.pw"].params == 32 * 16 and g["fc"].params == 320
    keep = (1, 3, 5, 8, 13)  # block1.pw and the depthwise block2.dw keep one channel set
    plan = (MOBILENET.uniform_plan(4, 4, 5).with_layer("block1.pw", keep=keep)
            .with_layer("block2.dw", keep=keep))
    g = _geo(MOBILENET, plan)
    assert (g["block2.dw"].params, g["block2.pw"].in_ch, g["block2.pw"].params) == (45, 5, 160)
    t = plan_metrics(MOBILENET, plan).totals
    params = 72 + 72 + 5 * 8 + 45 + 32 * 5 + 288 + 1024 + 320
    assert t.params == params and t.weight_mbit == pytest.approx(4 * params / 1e6)
    acts = 64 * 5 + 4 * (8 * 64 + 8 * 64 + 5 * 64 + 5 * 16 + 32 * 16 + 32 * 16 + 32 * 16)
    assert t.act_mbit == pytest.approx(acts / 1e6)


def test_resnet_activation_memory_counts_adds_at_their_bits():
    plan = RESNET.uniform_plan(4, 4, 5).with_layer("layer1.0.conv2", act_bits=3)
    rows = {r.layer: r for r in plan_metrics(RESNET, plan).layers}
    assert rows["layer1.0.conv2"].act_mbit == pytest.approx(8 * 64 * 3 / 1e6)
    hidden = sum(r.act_mbit for r in rows.values())
    adds = (8 * 64 * 3 + 16 * 16 * 4 + 16 * 16 * 4) / 1e6  # layer1.0.add at conv2's 3 bits
    assert plan_metrics(RESNET, plan).totals.act_mbit == pytest.approx(64 * 5 / 1e6 + hidden + adds)


def test_cnv_is_finns_cnv():
    cnv = get_architecture("cnv")
    assert [(n.name, n.kind, getattr(n, "out", None)) for n in cnv.nodes] == [
        ("conv1", "conv", 64), ("conv2", "conv", 64), ("pool1", "maxpool", None),
        ("conv3", "conv", 128), ("conv4", "conv", 128), ("pool2", "maxpool", None),
        ("conv5", "conv", 256), ("conv6", "conv", 256), ("fc1", "linear", 512),
        ("fc2", "linear", 512), ("fc3", "linear", 10)]
    g = _geo(cnv)
    assert [g[f"conv{i}"].out_hw for i in range(1, 7)] == [30, 28, 12, 10, 3, 1]
    assert g["conv3"].in_hw == 14 and g["conv5"].in_hw == 5 and g["fc1"].in_ch == 256


def test_channel_groups_and_sources():
    assert RESNET.channel_groups() == [
        ("stem", "layer1.0.conv2"), ("layer2.0.conv2", "layer2.0.shortcut", "layer3.0.conv2")]
    # through layer1.0.add, by its main branch (coupled with stem: one channel set)
    assert RESNET.channel_source("layer2.0.conv1") == "layer1.0.conv2"
    assert RESNET.channel_source("layer2.0.shortcut") == "layer1.0.conv2"
    assert RESNET.channel_source("fc") == "layer3.0.conv2"  # through the add and the GAP
    assert RESNET.channel_source("stem") is None
    assert RESNET.add_bits_source("layer2.0.add") == "layer2.0.conv2"
    assert MOBILENET.channel_groups() == [
        ("stem", "block1.dw"), ("block1.pw", "block2.dw"), ("block2.pw", "block3.dw")]
    assert VGG.channel_groups() == [] and get_architecture("digits_cnn").is_chain


@pytest.mark.parametrize("arch, layer, other, what", [
    (RESNET, "layer2.0.shortcut", "layer2.0.conv2", "the producers into one residual add"),
    (RESNET, "layer3.0.conv2", "layer2.0.conv2", "the producers into one residual add"),
    (MOBILENET, "block2.dw", "block1.pw", "a depthwise layer and its producer"),
])
def test_check_plan_enforces_coupled_channels(arch, layer, other, what):
    plan = arch.uniform_plan(4, 4, 5).with_layer(layer, keep=(0, 1, 2))
    with pytest.raises(ConfigError, match=rf"^plan: layers\.{layer}\.keep must equal "
                                          rf"layers\.{other}\.keep: {what}"):
        arch.check_plan(plan)
    group = next(g for g in arch.channel_groups() if layer in g)
    for name in group:
        plan = plan.with_layer(name, keep=(0, 1, 2))
    arch.check_plan(plan)


def _arch(*nodes) -> Architecture:
    return Architecture("t", (1, 8, 8), (*nodes, LayerSpec("fc", "linear", 10, act=None)))


@pytest.mark.parametrize("nodes, message", [
    ((LayerSpec("a", "conv", 4, 3, padding=1), LayerSpec("b", "conv", 8, 3, padding=1, act=None),
      OpSpec("add", "add", inputs=("b", "a"))),
     r"add add joins b \(8x8x8\) and a \(4x8x8\); both inputs need one shape"),
    ((LayerSpec("a", "conv", 4, 3, act=None), LayerSpec("b", "conv", 4, 3)),
     "a has no activation but feeds b"),
    ((LayerSpec("a", "conv", 4, 3), LayerSpec("b", "conv", 4, 3, inputs=("c",))),
     "b reads 'c', which is not an earlier node"),
    ((LayerSpec("a", "conv", 4, 3), LayerSpec("a", "conv", 4, 3)), "'a' is used twice"),
    ((LayerSpec("a", "conv", 4, 3), LayerSpec("dw", "conv", 8, 3, groups=8)),
     "depthwise dw has 8 channels but its input has 4"),
    ((LayerSpec("a", "conv", 4, 3), OpSpec("add", "add", inputs=("a",))),
     "add add needs exactly two inputs"),
    ((LayerSpec("a", "conv", 4, 9),), "a shrinks the 8x8 input below 1x1"),
    ((LayerSpec("a", "conv", 4, 3), OpSpec("p", "avgpool", 2, 2, 1)),
     "average pool p has padding 1; FINN sums pools without padding"),
    ((LayerSpec("a", "conv", 4, 3), LayerSpec("b", "conv", 4, 3, inputs=("a",)),
      LayerSpec("c", "conv", 4, 3, inputs=("a",))), "the output of b is never used"),
])
def test_structural_errors_name_the_node(nodes, message):
    with pytest.raises(ConfigError, match=message):
        _arch(*nodes)


# ----------------------------------------------------------------------------- quantized nodes


def test_add_inputs_share_one_quantizer_at_the_main_branch_bits():
    plan = (RESNET.uniform_plan(4, 4, 5).with_layer("layer1.0.conv2", act_bits=3)
            .with_layer("stem", act_bits=5))
    q = build_quant(RESNET, 16, plan)
    add = q.ops["layer1.0.add"]
    seen = []
    add.quant.register_forward_hook(lambda m, i, o: seen.append(o))
    calibrate(q, [torch.randint(0, 17, (32, 1, 8, 8)).float()])
    seen.clear()
    q(torch.randint(0, 17, (4, 1, 8, 8)).float())
    assert len(seen) == 2  # one module quantizes both inputs: one scale
    scale = float(add.quant.act_quant.scale())
    for out in seen:
        levels = out / scale
        assert torch.allclose(levels, levels.round(), atol=1e-4)
        assert levels.round().min() >= -4 and levels.round().max() <= 3  # signed 3 bits
    assert int(add.quant.act_quant.bit_width()) == 3 and int(add.act.act_quant.bit_width()) == 3


@pytest.mark.parametrize("act, bits, low, high, levels", [
    ("relu6", 4, 0.0, 6.0, 16), ("hardtanh", 3, -1.0, 1.0, 7)])
def test_clipped_activations_saturate_in_the_quantizer(act, bits, low, high, levels):
    arch = _arch(LayerSpec("a", "conv", 4, 3, act=act))
    q = build_quant(arch, 1, arch.uniform_plan(4, bits, 8))
    quant = q.blocks["a"][2]
    x = torch.linspace(-10, 10, 2001)
    y = quant(x).detach()
    assert float(y.min()) == pytest.approx(low) and float(y.max()) == pytest.approx(high)
    assert len(torch.unique(y)) == levels  # constant scale: the clip is the saturation


def test_leaky_relu_is_followed_by_a_signed_quantizer():
    arch = _arch(LayerSpec("a", "conv", 4, 3, act="leaky_relu"))
    q = build_quant(arch, 1, arch.uniform_plan(4, 3, 8))
    leaky, quant = q.blocks["a"][2], q.blocks["a"][3]
    assert isinstance(leaky, nn.LeakyReLU) and leaky.negative_slope == 0.01
    assert int(quant.act_quant.bit_width()) == 3 and quant.act_quant.is_signed


# ----------------------------------------------------------------------------- channel surgery


def _randomise(net: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
    return net.eval()


def test_surgery_on_coupled_groups_equals_numpy_slicing():
    s, k, j = [0, 2, 3, 7], [1, 4, 5, 9, 15], [0, 6, 11]
    plan = RESNET.uniform_plan(4, 4, 5)
    for name in ("stem", "layer1.0.conv2"):
        plan = plan.with_layer(name, keep=tuple(s))
    for name in ("layer2.0.conv2", "layer2.0.shortcut", "layer3.0.conv2"):
        plan = plan.with_layer(name, keep=tuple(k))
    plan = plan.with_layer("layer3.0.conv1", keep=tuple(j))
    full = _randomise(build_float(RESNET, 16))
    small = transfer_weights(full, None, build_float(RESNET, 16, plan), plan)
    w = {n: full.blocks[n][0].weight.detach().numpy() for n in RESNET.layer_names}
    expected = {
        "stem": w["stem"][s], "layer1.0.conv1": w["layer1.0.conv1"][:, s],
        "layer1.0.conv2": w["layer1.0.conv2"][s], "layer2.0.conv1": w["layer2.0.conv1"][:, s],
        "layer2.0.conv2": w["layer2.0.conv2"][k],
        "layer2.0.shortcut": w["layer2.0.shortcut"][k][:, s],
        "layer3.0.conv1": w["layer3.0.conv1"][j][:, k],
        "layer3.0.conv2": w["layer3.0.conv2"][k][:, j],
        "fc": w["fc"][:, k],
    }
    for name, ref in expected.items():
        np.testing.assert_array_equal(small.blocks[name][0].weight.detach().numpy(), ref)
    np.testing.assert_array_equal(small.blocks["layer2.0.shortcut"][1].running_mean.numpy(),
                                  full.blocks["layer2.0.shortcut"][1].running_mean.numpy()[k])
    assert small(torch.randint(0, 17, (3, 1, 8, 8)).float()).shape == (3, 10)


def test_surgery_depthwise_follows_its_producer_and_pools_flatten():
    keep = (1, 3, 5, 8, 13)
    plan = (MOBILENET.uniform_plan(4, 4, 5).with_layer("block1.pw", keep=keep)
            .with_layer("block2.dw", keep=keep).with_layer("block2.pw", keep=(0, 31))
            .with_layer("block3.dw", keep=(0, 31)))
    with pytest.raises(ConfigError, match="layers.block3.dw.keep must equal layers.block2.pw"):
        build_float(MOBILENET, 16, plan.with_layer("block3.dw", keep=None))
    full = _randomise(build_float(MOBILENET, 16))
    small = transfer_weights(full, None, build_float(MOBILENET, 16, plan), plan)
    w = {n: full.blocks[n][0].weight.detach().numpy() for n in MOBILENET.layer_names}
    got = {n: small.blocks[n][0].weight.detach().numpy() for n in MOBILENET.layer_names}
    np.testing.assert_array_equal(got["block2.dw"], w["block2.dw"][list(keep)])
    assert small.blocks["block2.dw"][0].groups == 5
    np.testing.assert_array_equal(got["block2.pw"], w["block2.pw"][[0, 31]][:, list(keep)])
    np.testing.assert_array_equal(got["block3.dw"], w["block3.dw"][[0, 31]])
    # VGG: the classifier reads the max-pooled 2x2 maps channel-major flattened
    vplan = VGG.uniform_plan(4, 4, 5).with_layer("block2.conv2", keep=(2, 9))
    vfull = _randomise(build_float(VGG, 16))
    vsmall = transfer_weights(vfull, None, build_float(VGG, 16, vplan), vplan)
    fc = vfull.blocks["fc"][0].weight.detach().numpy()
    np.testing.assert_array_equal(vsmall.blocks["fc"][0].weight.detach().numpy(),
                                  fc[:, [8, 9, 10, 11, 36, 37, 38, 39]])


# ----------------------------------------------------------------------------- a user's module


class Residual(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(ch), nn.ReLU(),
                                  nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch))

    def forward(self, x):
        return F.relu(x + self.body(x))


class UserGraphNet(nn.Module):
    """Ordinary PyTorch: a residual block, max-pooling, a depthwise conv, ReLU6, GAP."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU6())
        self.layer1 = nn.Sequential(Residual(8))
        self.pool = nn.MaxPool2d(2)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.dw_bn, self.dw_act = nn.BatchNorm2d(8), nn.ReLU6()
        self.pw = nn.Conv2d(8, 16, 1, bias=False)
        self.pw_bn = nn.BatchNorm2d(16)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10, bias=False)

    def forward(self, x):
        x = self.pool(self.layer1(self.stem(x)))
        x = self.dw_act(self.dw_bn(self.dw(x)))
        x = self.gap(F.relu(self.pw_bn(self.pw(x))))
        return self.fc(torch.flatten(x, 1))


def test_users_module_is_traced_into_the_dag_by_module_path():
    arch = architecture_from_module(UserGraphNet(), (1, 8, 8), "user")
    assert [(n.name, n.kind, n.inputs, n.act) for n in arch.nodes] == [
        ("stem.0", "conv", ("input",), "relu6"),
        ("layer1.0.body.0", "conv", ("stem.0",), "relu"),
        ("layer1.0.body.3", "conv", ("layer1.0.body.0",), None),
        ("layer1.0.add", "add", ("layer1.0.body.3", "stem.0"), "relu"),
        ("pool", "maxpool", ("layer1.0.add",), None),
        ("dw", "conv", ("pool",), "relu6"),
        ("pw", "conv", ("dw",), "relu"),
        ("gap", "gap", ("pw",), None),
        ("flatten", "flatten", ("gap",), None),
        ("fc", "linear", ("flatten",), None)]
    assert arch.node("dw").groups == 8 and (arch.node("pool").kernel, arch.node("pool").stride) \
        == (2, 2)
    assert arch.channel_groups() == [("stem.0", "layer1.0.body.3", "dw")]


def test_users_module_rebuilt_by_densiflow_computes_the_same_function():
    """densiflow's float rebuild (bias-free layers, BatchNorm) with the user's weights equals
    the user's own module: the traced DAG is the network the user wrote."""
    user = _randomise(UserGraphNet())
    arch = architecture_from_module(user, (1, 8, 8), "user")
    net = build_float(arch, 1).eval()
    norms = {"stem.0": "stem.1", "layer1.0.body.0": "layer1.0.body.1",
             "layer1.0.body.3": "layer1.0.body.4", "dw": "dw_bn", "pw": "pw_bn"}
    modules = dict(user.named_modules())
    with torch.no_grad():
        for name in arch.layer_names:
            net.blocks[name][0].weight.copy_(modules[name].weight)
            if name in norms:
                net.blocks[name][1].load_state_dict(modules[norms[name]].state_dict())
    x = torch.randn(6, 1, 8, 8) * 3
    np.testing.assert_allclose(net(x).detach(), user(x).detach(), atol=1e-5)
    q = build_quant(arch, 16, arch.uniform_plan(4, 4, 5))
    calibrate(q, [torch.randint(0, 17, (16, 1, 8, 8)).float()])
    assert q(torch.randint(0, 17, (2, 1, 8, 8)).float()).shape == (2, 10)


class LeNetStyle(nn.Module):
    """relu(max_pool(conv(x))), as LeNet code often has it: the ReLU moves before the pool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.fc = nn.Linear(64, 10, bias=False)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(F.max_pool2d(self.conv(x), 2)), 1))


class PoolAndSkip(LeNetStyle):
    """The conv's raw output also feeds an add: the ReLU cannot move before the pool."""

    def forward(self, x):
        c = self.conv(x)
        return self.fc(torch.flatten(F.max_pool2d(F.relu(F.max_pool2d(c, 1)) + c, 2), 1))


def test_activation_after_max_pool_moves_before_it():
    user = LeNetStyle().eval()
    arch = architecture_from_module(user, (1, 8, 8), "lenet_style")
    assert [(n.name, n.kind, n.act) for n in arch.nodes] == [
        ("conv", "conv", "relu"), ("max_pool2d", "maxpool", None), ("flatten", "flatten", None),
        ("fc", "linear", None)]
    net = build_float(arch, 1).eval()
    with torch.no_grad():
        net.blocks["conv"][0].weight.copy_(user.conv.weight)
        net.blocks["conv"][1].weight.fill_(1.0)
        net.blocks["fc"][0].weight.copy_(user.fc.weight)
    bn = net.blocks["conv"][1]
    x = torch.randn(4, 1, 8, 8)
    ref = user.fc(torch.flatten(F.relu(F.max_pool2d(user.conv(x), 2)) / (1 + bn.eps) ** 0.5, 1))
    np.testing.assert_allclose(net(x).detach(), ref.detach(), atol=1e-5)
    with pytest.raises(ConfigError, match="model p: relu after max-pool max_pool2d applies to "
                                          "conv, which also feeds add; apply the activation"):
        architecture_from_module(PoolAndSkip(), (1, 8, 8), "p")


# ----------------------------------------------------------------------------- QONNX export


@pytest.mark.slow  # QONNX exports of three networks
@pytest.mark.parametrize("name", ["digits_vgg", "digits_resnet", "digits_mobilenet"])
def test_quantized_graphs_export_to_qonnx_equal_to_pytorch(name, tmp_path):
    from flow.ml.export import export_model, verify_export

    arch = get_architecture(name)
    plan = arch.uniform_plan(4, 4, 5)
    torch.manual_seed(0)
    q = build_quant(arch, 16, plan)
    transfer_weights(_randomise(build_float(arch, 16)), None, q, plan)
    x = torch.randint(0, 17, (8, 1, 8, 8)).float()
    calibrate(q, [torch.randint(0, 17, (64, 1, 8, 8)).float()])
    qmodel = export_model(q, arch.in_shape, 5, tmp_path / "m.onnx")
    ops = {n.op_type for n in qmodel.graph.node}
    assert {"Quant", "Conv"} <= ops
    assert ("MaxPool" in ops) == (name == "digits_vgg")
    assert ("Add" in ops) == (name == "digits_resnet")
    assert verify_export(qmodel, q, x)["prediction_agreement"] == 1.0
    # every node records the network node it belongs to, by module path
    from flow.finn.rewrites import origin

    owners = {n.op_type: [] for n in qmodel.graph.node}
    for n in qmodel.graph.node:
        owners[n.op_type].append(origin(n))
    layers = [o.split(" (")[1][:-1] for o in owners["Conv"] + owners["MatMul"]]
    assert sorted(layers) == sorted(arch.layer_names)  # ONNX order may differ on a DAG
    assert all(o.startswith("Conv_") for o in owners["Conv"])
    if name == "digits_resnet":
        assert [o.split(" (")[1] for o in owners["Add"]] == [
            "layer1.0.add)", "layer2.0.add)", "layer3.0.add)"]


class Functional(nn.Module):
    """The functional spellings: torch.add, +=, F.relu6, torch.relu, F.avg_pool2d,
    F.adaptive_avg_pool2d and .flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.conv3, self.fc = nn.Conv2d(8, 8, 1), nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu6(self.conv1(x))
        y = F.avg_pool2d(F.relu(torch.add(self.conv2(x), x)), 2)
        z = self.conv3(y)
        z += y
        return self.fc(F.adaptive_avg_pool2d(torch.relu(z), 1).flatten(1))


def test_functional_spellings_trace_to_the_same_dag():
    arch = architecture_from_module(Functional(), (1, 8, 8), "f")
    assert [(n.name, n.kind, n.inputs, n.act) for n in arch.nodes] == [
        ("conv1", "conv", ("input",), "relu6"), ("conv2", "conv", ("conv1",), None),
        ("add", "add", ("conv2", "conv1"), "relu"), ("avg_pool2d", "avgpool", ("add",), None),
        ("conv3", "conv", ("avg_pool2d",), None),
        ("add_1", "add", ("conv3", "avg_pool2d"), "relu"),
        ("adaptive_avg_pool2d", "gap", ("add_1",), None),
        ("flatten", "flatten", ("adaptive_avg_pool2d",), None),
        ("fc", "linear", ("flatten",), None)]
    assert arch.channel_groups() == [("conv1", "conv2", "conv3")]


def test_an_explicit_flatten_exports_once(tmp_path):
    """A user's torch.flatten before the classifier is the export's one Flatten (FINN removes
    one; a second after it would stay in software)."""
    from flow.ml.export import export_model

    arch = architecture_from_module(LeNetStyle(), (1, 8, 8), "lenet_style")
    q = build_quant(arch, 16, arch.uniform_plan(4, 4, 5))
    calibrate(q, [torch.randint(0, 17, (16, 1, 8, 8)).float()])
    qmodel = export_model(q, arch.in_shape, 5, tmp_path / "m.onnx")
    assert [n.op_type for n in qmodel.graph.node].count("Flatten") == 1


def test_dfq_bit_mixture_of_a_depthwise_conv_is_depthwise():
    from flow.models.quantizers import BitMixture, fake_quant_weight

    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
    mix = BitMixture(conv, [2, 4], norm=False)
    ref = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        ref.weight.copy_(fake_quant_weight(conv.weight, 4))
        np.testing.assert_allclose(mix.branch(x, 1), ref(x), atol=1e-6)
