"""A user's own network, defined here in the test file, through densiflow: factory in a recipe,
registration from Python, and the clear errors for what cannot be deployed."""
from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from flow.core.errors import ConfigError
from flow.models import build_float
from flow.models.custom import architecture_from_module, register
from flow.recipe.config import parse_recipe


class UserNet(nn.Module):
    """A user's CNN for 8x8 digits: 8 -> 8 -> 3 -> 1, then a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
            nn.Conv2d(16, 16, 3), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def make() -> nn.Module:
    return UserNet()


def test_the_architecture_follows_the_users_layers():
    arch = architecture_from_module(UserNet(), (1, 8, 8), "user")
    assert [(s.kind, s.out, s.kernel, s.stride, s.padding) for s in arch.layers] == [
        ("conv", 8, 3, 1, 1), ("conv", 16, 3, 2, 0), ("conv", 16, 3, 1, 0), ("linear", 10, 1, 1, 0)]
    assert [g.out_hw for g in arch.geometry()] == [8, 3, 1, 1]
    net = build_float(arch, 16)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    # densiflow's rebuild has the user's weight shapes
    user = dict(UserNet().named_parameters())
    assert net.blocks["features.3"][0].weight.shape == user["features.3.weight"].shape


def test_factory_in_a_recipe_and_registration():
    recipe = parse_recipe({"name": "u", "model": {"factory": "test_custom_model:make"}})
    assert recipe.model.name == "test_custom_model:make"
    register("user_net", make)
    assert parse_recipe({"name": "u", "model": {"arch": "user_net"}}).model.arch == "user_net"
    with pytest.raises(ConfigError, match="model.factory: cannot import 'no_such_module'"):
        parse_recipe({"name": "u", "model": {"factory": "no_such_module:make"}})
    with pytest.raises(ConfigError, match="arch or factory, not both"):
        parse_recipe({"name": "u", "model": {"arch": "digits_cnn", "factory": "x:y"}})


@pytest.mark.parametrize("body, message", [
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(),
                           nn.Linear(64, 10)), "model user: 0 has no activation but feeds 1"),
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3, dilation=2), nn.ReLU(), nn.Flatten(),
                           nn.Linear(64, 10)), "0 has dilation 2; use dilation 1"),
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3, groups=2),
                           nn.ReLU(), nn.Flatten(), nn.Linear(128, 10)),
     "2 has groups=2 with 4 in and 8 out channels; use groups=1 or a depthwise"),
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.ReLU()), "last layer must be"),
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.Sigmoid(), nn.Flatten(), nn.Linear(144, 10)),
     r"1 \(Sigmoid\) is not a layer kind densiflow deploys; use Conv2d"),
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                           nn.Flatten(), nn.Linear(16, 10)), "2 pools to 2; .* use AvgPool2d"),
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.LeakyReLU(0.2), nn.Flatten(),
                           nn.Linear(144, 10)), "1 has negative slope 0.2"),
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.Hardtanh(0, 2), nn.Flatten(),
                           nn.Linear(144, 10)), r"1 clips to \[0, 2\]"),
    # input sizes that do not fit the data's shape name both sizes
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10)),
     r"0 expects 3 input channels, but a 1x8x8 input \(data.shape\) gives it 1"),
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10)),
     "3 expects 64 input features, but a 1x8x8 input .* gives it 144"),
])
def test_what_cannot_be_deployed_is_named(body, message):
    with pytest.raises(ConfigError, match=message):
        architecture_from_module(body(), (1, 8, 8), "user")


class Scaled(nn.Module):
    """A residual block whose add scales a term, and a concatenation: named by module path."""

    def __init__(self, cat: bool) -> None:
        super().__init__()
        self.cat = cat
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.block = Block(4, scale=not cat)
        self.fc = nn.Linear(256 * (2 if cat else 1), 10)

    def forward(self, x):
        x = self.stem(x)
        y = torch.cat([x, self.block(x)], 1) if self.cat else self.block(x)
        return self.fc(torch.flatten(y, 1))


class Block(nn.Module):
    """A basic residual block written as people write it."""

    def __init__(self, ch: int, scale: bool = False) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(ch), nn.ReLU(),
                                  nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch))

    def forward(self, x):
        out = x + 0.5 * self.body(x) if self.scale else x + self.body(x)
        return nn.functional.relu(out)


@pytest.mark.parametrize("cat, message", [
    (False, r"model user: block.mul \(mul\) is not a layer kind"),
    (True, r"model user: cat \(cat\) is not a layer kind .*concatenation is not deployed yet"),
])
def test_errors_name_the_module_path_of_functional_calls(cat, message):
    with pytest.raises(ConfigError, match=message):
        architecture_from_module(Scaled(cat), (1, 8, 8), "user")


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(144, 10)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.a(x) + self.b(x)), 1))


def test_two_branches_into_one_add_are_one_channel_group():
    arch = architecture_from_module(Branchy(), (1, 8, 8), "branchy")
    add = arch.node("add")
    assert add.kind == "add" and add.inputs == ("a", "b") and add.act == "relu"
    assert arch.node("a").act is None and arch.node("b").inputs == ("input",)
    assert arch.channel_groups() == [("a", "b")]


# ----------------------------------------------------------------------------- end to end


def user_recipe(name: str, method: dict, **extra) -> dict:
    return {"name": name, "data": {"dataset": "digits", "limit": 300},
            "model": {"factory": "test_custom_model:make"}, "train": {"epochs": 2},
            "qat": {"epochs": 1}, "method": method,
            "hardware": {"board": "pynq-z1", "target_fps": 20000}, **extra}


@pytest.mark.slow
@pytest.mark.rtlsim
def test_users_network_compressed_by_aqp_simulates_bit_exactly(bit_exact_run):
    """The user's network through AQP (structured pruning cuts its channels out), QONNX, FINN and
    the RTL simulation: every output word equal to FINN's execution and PyTorch's classes."""
    plan = bit_exact_run(user_recipe(
        "user_aqp", {"name": "aqp", "pruning": "structured", "report": False, "max_bits": 4,
                     "min_act_bits": 3, "calib_samples": 64},
        simulate={"frames": 20}))
    assert set(plan.layers) == {"features.0", "features.3", "features.5", "head.2"}


@pytest.mark.slow
def test_users_network_in_the_search(tmp_path):
    """The search's space follows the user's layers, and its chosen plan is runnable as a recipe."""
    from flow.recipe.config import load_recipe
    from flow.search.runner import run_search

    recipe = parse_recipe(user_recipe(
        "user_search", {"name": "search", "trials": 3, "population": 2, "trial_epochs": 1,
                        "qat_top": 1, "builtin_seeds": ["uniform"], "weight_bits": [3, 4],
                        "act_bits": [3, 4], "keep_fractions": [0.5, 1.0], "finn": "none"},
        simulate={"enabled": False}))
    outcome = run_search(recipe, tmp_path, workers=1)
    assert outcome.chosen is not None
    for point in outcome.points:
        assert set(point.candidate.compression_plan().layers) == {
            "features.0", "features.3", "features.5", "head.2"}
        assert load_recipe(point.recipe_file).model.factory == "test_custom_model:make"


def make_graph() -> nn.Module:
    """A user's graph network: a residual block, max-pooling, a depthwise conv, ReLU6, GAP."""
    from test_graph_models import UserGraphNet

    return UserGraphNet()


@pytest.mark.slow
@pytest.mark.rtlsim
def test_users_graph_network_simulates_bit_exactly(bit_exact_run):
    """Ordinary PyTorch (x + self.body(x), nn.MaxPool2d, a depthwise conv, nn.ReLU6,
    nn.AdaptiveAvgPool2d(1)) through `model: {factory: ...}` unedited, uniform W4A4, QONNX, FINN
    and the RTL simulation: every output word equal to FINN's execution and PyTorch's classes."""
    recipe = user_recipe("user_graph", {"name": "uniform", "weight_bits": 4, "act_bits": 4},
                         simulate={"frames": 20})
    recipe["model"] = {"factory": "test_custom_model:make_graph"}
    plan = bit_exact_run(recipe)
    assert set(plan.layers) == {"stem.0", "layer1.0.body.0", "layer1.0.body.3", "dw", "pw", "fc"}


NET_SOURCE = '''
from torch import nn


def make():
    return nn.Sequential(nn.Conv2d(1, {width}, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear({width} * 36, 10))
{extra}
'''


def test_baseline_digest_follows_the_traced_graph_not_the_file(tmp_path):
    """An unrelated edit of the factory's file keeps the baseline; a changed network redoes it
    (issue 18: the digest covers what builds the network)."""
    from flow.run.table import STEPS, step_inputs

    def baseline_digest(width: int, extra: str = "") -> str:
        (tmp_path / "user_net_file.py").write_text(NET_SOURCE.format(width=width, extra=extra))
        sys.modules.pop("user_net_file", None)  # the edited file, as a new process imports it
        recipe = parse_recipe({"name": "u", "model": {"factory": "user_net_file:make",
                                                      "factory_dir": str(tmp_path)}})
        return step_inputs(recipe, STEPS[0])

    plain = baseline_digest(8)
    assert baseline_digest(8, "\n\ndef unrelated():\n    return 1\n") == plain
    assert baseline_digest(16) != plain
    zoo = [step_inputs(parse_recipe({"name": "u", "model": {"arch": a}}), STEPS[0])
           for a in ("digits_cnn", "digits_vgg")]
    assert zoo[0] != zoo[1]
