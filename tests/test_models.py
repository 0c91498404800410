import numpy as np
import pytest
import torch

from flow.core.errors import ConfigError, ModelError
from flow.models import (
    ARCHITECTURES,
    build_float,
    build_quant,
    calibrate,
    get_architecture,
    transfer_weights,
)

DIGITS = get_architecture("digits_cnn")


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architectures_build(name):
    """Every architecture builds float and quantized, and ends in the linear classifier."""
    arch = ARCHITECTURES[name]
    assert arch.layers[-1].kind == "linear" and arch.layers[-1].act is None
    x = torch.randint(0, 256, (2, *arch.in_shape)).float()
    plan = arch.uniform_plan(3, 3, 8)
    assert build_quant(arch, 255, plan)(x).shape == (2, arch.num_classes)
    assert build_float(arch, 255)(x).shape == (2, arch.num_classes)


def test_geometry_closed_form():
    geo = {g.name: g for g in DIGITS.geometry()}
    assert geo["conv1"].params == 16 * 1 * 9 and geo["conv1"].out_hw == 8
    assert geo["conv2"].params == 32 * 16 * 9 and geo["conv2"].out_hw == 6
    assert geo["conv4"].params == 64 * 32 * 16 and geo["conv4"].macs == 64 * 32 * 16
    assert geo["fc1"].params == 640


def test_channel_surgery_equals_zeroed_channels():
    """Removing kept-out channels physically gives the same function as zeroing their uses."""
    torch.manual_seed(0)
    full = build_float(DIGITS, 16).eval()
    for m in full.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
    keep2, keep4 = (1, 4, 7, 20, 31), tuple(range(0, 64, 3))
    plan = (DIGITS.uniform_plan(4, 4, 5).with_layer("conv2", keep=keep2)
            .with_layer("conv4", keep=keep4))
    small = transfer_weights(full, None, build_float(DIGITS, 16, plan), plan).eval()
    assert small.blocks["conv2"][0].weight.shape == (5, 16, 3, 3)
    assert small.blocks["conv3"][0].weight.shape == (32, 5, 3, 3)
    assert small.blocks["fc1"][0].weight.shape == (10, len(keep4))
    with torch.no_grad():
        drop2 = [c for c in range(32) if c not in keep2]
        drop4 = [c for c in range(64) if c not in keep4]
        full.blocks["conv3"][0].weight[:, drop2] = 0
        full.blocks["fc1"][0].weight[:, drop4] = 0
    x = torch.randint(0, 17, (16, 1, 8, 8)).float()
    np.testing.assert_allclose(small(x).detach(), full(x).detach(), atol=1e-5)


def test_surgery_from_pruned_source_and_error_on_removed_channels():
    full = build_float(DIGITS, 16)
    plan_a = DIGITS.uniform_plan(4, 4, 5).with_layer("conv2", keep=(0, 2, 4, 6))
    a = transfer_weights(full, None, build_float(DIGITS, 16, plan_a), plan_a)
    plan_b = plan_a.with_layer("conv2", keep=(2, 6))
    b = transfer_weights(a, plan_a, build_float(DIGITS, 16, plan_b), plan_b)
    assert torch.equal(b.blocks["conv2"][0].weight, full.blocks["conv2"][0].weight[[2, 6]])
    with pytest.raises(ModelError, match=r"conv2: channels \[1\] were already removed"):
        plan_c = plan_a.with_layer("conv2", keep=(1, 2))
        transfer_weights(a, plan_a, build_float(DIGITS, 16, plan_c), plan_c)


def test_quant_layers_carry_plan_bits():
    plan = DIGITS.uniform_plan(4, 4, 5).with_layer("conv3", weight_bits=2, act_bits=3)
    model = build_quant(DIGITS, 16, plan)
    calibrate(model, [torch.randint(0, 17, (32, 1, 8, 8)).float()])
    w = model.blocks["conv3"][0].quant_weight()
    assert int(w.bit_width) == 2
    levels = torch.unique(w.int())
    assert levels.min() >= -1 and levels.max() <= 1  # signed narrow range at 2 bits
    assert int(model.blocks["conv3"][2].act_quant.bit_width()) == 3
    assert int(model.input_quant.act_quant.bit_width()) == 5


def test_unknown_architecture():
    with pytest.raises(ConfigError, match="allowed"):
        get_architecture("resnet9000")
