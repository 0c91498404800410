"""DFQ ("Differentiable Fine-grained Quantization for Deep Neural Network Compression"): the
relaxation and its costs against hand sums, λ's switch at θ, the bi-level
step's direction, discretisation, and the recipe end to end."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from helpers import method_context
from torch import nn

from flow.core.errors import ConfigError
from flow.methods.dfq.bilevel import (
    _alpha_step,
    discrete_weights,
    discretise,
    hardware_costs,
    lagrange_lambda,
    mixtures,
    search,
    size_costs,
    supernet,
)
from flow.methods.dfq.report import DfqEpoch, DfqRow, DfqSearch, DfqTable, claim_checks, run_report
from flow.methods.params import DfqParams
from flow.ml.train import predict
from flow.models.quantizers import BitMixture, expected_cost, fake_quant_weight
from flow.recipe.config import parse_recipe
from flow.recipe.plan import CompressionPlan

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_lambda_switches_exactly_at_theta():
    assert lagrange_lambda(0.3, 0.3, 100.0) == 0.0  # L_val - θ <= 0
    assert lagrange_lambda(0.2999, 0.3, 100.0) == 0.0
    assert lagrange_lambda(0.30000001, 0.3, 100.0) == 100.0
    assert lagrange_lambda(5.0, 0.3, 7.5) == 7.5


def test_softmax_expected_cost_against_a_hand_sum():
    a = BitMixture(nn.Linear(3, 2, bias=False), [2, 8], norm=False)
    b = BitMixture(nn.Linear(2, 2, bias=False), [2, 4, 8], norm=False)
    with torch.no_grad():
        a.alpha.copy_(torch.tensor([0.0, 1.0]))
        b.alpha.copy_(torch.tensor([1.0, 0.0, -1.0]))
    # sizes b·N: a has 6 weights, b has 4
    costs = [[2 * 6, 8 * 6], [2 * 4, 4 * 4, 8 * 4]]
    e = torch.e
    hand = (12 * 1 + 48 * e) / (1 + e) + (8 * e + 16 * 1 + 32 / e) / (e + 1 + 1 / e)
    assert expected_cost([a, b], costs).item() == pytest.approx(hand)


def test_fake_quant_weight_closed_form():
    w = torch.tensor([0.9, -0.3, 0.1, -0.05], requires_grad=True)
    # b = 3: levels ±3, scale 0.9/3 = 0.3
    assert fake_quant_weight(w, 3).tolist() == pytest.approx([0.9, -0.3, 0.0, -0.0])
    # b = 1: sign(w)·mean|w| = ±0.3375
    assert fake_quant_weight(w, 1).tolist() == pytest.approx([0.3375, -0.3375, 0.3375, -0.3375])
    fake_quant_weight(w, 2).sum().backward()  # straight-through
    assert w.grad.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_mixture_is_the_softmax_weighted_sum_of_its_branches():
    torch.manual_seed(0)
    mix = BitMixture(nn.Conv2d(2, 3, 3, bias=False), [2, 8], norm=True).eval()
    with torch.no_grad():
        mix.alpha.copy_(torch.tensor([0.5, -0.5]))
        mix.norms[1].running_mean.fill_(0.3)
    x = torch.randn(4, 2, 5, 5)
    p = torch.softmax(torch.tensor([0.5, -0.5]), 0)
    branch8 = mix.norms[1](nn.functional.conv2d(x, fake_quant_weight(mix.layer.weight, 8)))
    expected = p[0] * mix.branch(x, 0) + p[1] * branch8
    torch.testing.assert_close(mix(x), expected)
    assert mix.chosen() == 0


@pytest.fixture(scope="module")
def ctx(torch_one_thread):
    return method_context(300, 6, {"hardware": {"board": "pynq-z1", "target_fps": 100000}})


def test_size_costs_are_bits_times_weights_normalised(ctx):
    costs = size_costs(ctx, [2, 4, 8])
    params = [g.params for g in ctx.arch.geometry()]
    total = 8 * sum(params)
    for row, n in zip(costs, params):
        assert row == pytest.approx([2 * n / total, 4 * n / total, 8 * n / total])


def test_hardware_costs_are_normalised_and_grow_with_bits(ctx):
    costs = hardware_costs(ctx, [2, 8], act_bits=4)
    assert sum(row[-1] for row in costs) == pytest.approx(1.0)
    assert all(row[0] <= row[1] for row in costs)
    # the weight memory of the wide, parallel conv2/conv3 is what 2-bit weights save most
    saving = {spec.name: row[1] - row[0] for spec, row in zip(ctx.arch.layers, costs)}
    assert max(saving, key=saving.get) in ("conv2", "conv3")
    binary = hardware_costs(ctx, [1, 8], act_bits=4)  # 1-bit layers: FINN's HLS MVAU
    assert [row[1] for row in binary] == pytest.approx([row[1] for row in costs])
    assert all(0 < row[0] for row in binary)


def test_supernet_starts_as_the_float_network_at_its_widest(ctx):
    net = supernet(ctx, [8, 8], act_bits=8)  # both branches 8-bit: one network twice
    # 8-bit activations and weights: close to the float network, same predictions mostly
    x = ctx.data.x_test[:64]
    agree = (predict(net, x).argmax(1) == predict(ctx.float_model, x).argmax(1)).float().mean()
    assert agree >= 0.95


def test_alpha_step_without_lambda_lowers_the_expected_cost(ctx):
    net = supernet(ctx, [2, 8], act_bits=4)
    costs = size_costs(ctx, [2, 8])
    before = expected_cost(mixtures(net), costs).item()
    opt = torch.optim.SGD([m.alpha for m in mixtures(net)], lr=0.1)
    x, y = ctx.data.x_val[:32], ctx.data.y_val[:32]
    loss, lam = _alpha_step(net, opt, x, y, costs, theta=1e9, lambda_inf=100.0)
    assert lam == 0.0
    assert expected_cost(mixtures(net), costs).item() < before
    # above θ the validation loss drives α: λ = Λ
    _, lam = _alpha_step(net, opt, x, y, costs, theta=-1.0, lambda_inf=100.0)
    assert lam == 100.0


def test_discretise_takes_the_argmax(ctx):
    net = supernet(ctx, [2, 8], act_bits=4)
    with torch.no_grad():
        for i, m in enumerate(mixtures(net)):
            m.alpha.copy_(torch.tensor([1.0, 0.0] if i % 2 else [0.0, 1.0]))
    plan = discretise(ctx, net, [2, 8], act_bits=4)
    assert [plan.layers[n].weight_bits for n in ctx.arch.layer_names] == [8, 2, 8, 2, 8]
    assert plan.layers["conv1"].act_bits == 4 and plan.layers["fc1"].act_bits is None
    float_net = discrete_weights(ctx, net)
    torch.testing.assert_close(float_net.blocks["conv2"][1].running_var,
                               mixtures(net)[1].norms[0].running_var)


def test_binary_candidates_only_for_estimate_targets():
    with pytest.raises(ConfigError, match="candidates"):
        parse_recipe({"name": "x", "method": {"name": "dfq", "candidates": [1, 8]}})
    recipe = parse_recipe({"name": "x", "method": {"name": "dfq", "candidates": [8, 1]},
                           "hardware": {"target": "estimate"}, "simulate": {"enabled": False}})
    assert recipe.method.candidates == [1, 8]
    with pytest.raises(ConfigError, match="repeat"):
        parse_recipe({"name": "x", "method": {"name": "dfq", "candidates": [2, 2]}})


@pytest.mark.slow
def test_search_returns_a_plan_over_the_candidates(ctx):
    p = DfqParams(name="dfq", epochs=2, warmup_epochs=1, report=False)
    r = search(ctx, p, "hardware")
    assert {lp.weight_bits for lp in r.plan.layers.values()} <= {2, 8}
    assert len(r.trace) == 2 and r.trace[0]["val_loss"] is None  # warm-up: w only
    assert 0 <= r.trace[1]["lambda_on"] <= 1


# ----------------------------------------------------------------------------- Table 1


def table_row(method: str, compression: float, acc: float, share: float | None) -> DfqRow:
    return DfqRow(method=method, weight_bits=32, avg_bits=32 / compression,
                  compression_ratio=compression, test_accuracy=acc,
                  accuracy_diff_points=100 * (acc - 0.98), weight_mbit=1.0, finn=None,
                  lut_bram18_board_share=share, search_s=None, qat_s=None)


def test_claim_checks_on_the_rows_by_name():
    rows = {r.method: r for r in (
        table_row("float32", 1.0, 0.98, None), table_row("uniform 8-bit", 4.0, 0.98, 0.5),
        table_row("uniform 2-bit", 16.0, 0.9, 0.1), table_row("DFQ (size)", 12.0, 0.976, 0.3),
        table_row("DFQ (hardware)", 11.0, 0.972, 0.2))}
    names = ("uniform 8-bit", "uniform 2-bit")
    assert claim_checks(rows, *names, "DFQ (size)") == {
        "compression between uniform rows": True, "compression >= 10x": True,
        "accuracy >= float - 0.5 points": True,
        "hardware cost: fewer LUT+BRAM18 than size cost": True,
        "hardware vs size cost: accuracy within 0.5 points": True}
    checks = claim_checks(rows, *names, "DFQ (hardware)")  # 97.2 % < 98 % - 0.5 points
    assert checks["accuracy >= float - 0.5 points"] is False
    del rows["DFQ (size)"]
    assert len(claim_checks(rows, *names, "DFQ (hardware)")) == 3  # no size row: no cost claims


def test_table_reads_back_with_its_plans_and_traces():
    plan = CompressionPlan.from_dict({"input_bits": 8, "layers": {
        "conv1": {"weight_bits": 2, "act_bits": 4, "keep": [0, 2]},
        "fc1": {"weight_bits": 8, "act_bits": None}}})
    epoch = DfqEpoch(epoch=1, val_loss=None, lambda_on=None, expected_cost=0.5,
                     probabilities=[[0.25, 0.75], [1.0, 0.0]])
    table = DfqTable(rows=[table_row("float32", 1.0, 0.98, None)], chosen="DFQ (size)",
                     act_bits=4, finn_source="FINN",
                     searches={"size": DfqSearch(theta=0.1, seconds=1.0, plan=plan,
                                                 trace=[epoch])},
                     checks={})
    assert DfqTable.model_validate_json(json.dumps(table.model_dump(mode="json"))) == table


@pytest.mark.slow
def test_report_writes_table_1_and_reads_it_back(ctx, tmp_path):
    p = DfqParams(name="dfq", epochs=2, warmup_epochs=1, report=False)
    table = run_report(ctx, p, {"size": search(ctx, p, "size")}, tmp_path)
    assert DfqTable.model_validate_json((tmp_path / "dfq_table.json").read_text()) == table
    assert [r.method for r in table.rows] == ["float32", "uniform 8-bit", "uniform 2-bit",
                                              "DFQ (size)"]
    rows = {r.method: r for r in table.rows}
    assert rows["float32"].finn is None and rows["float32"].weight_bits == 32
    assert rows["uniform 2-bit"].weight_bits == dict.fromkeys(ctx.arch.layer_names, 2)
    assert rows["uniform 2-bit"].compression_ratio == pytest.approx(16.0)
    assert rows["DFQ (size)"].finn.lut_finn_estimate > 0 and rows["DFQ (size)"].search_s > 0
    assert len(table.searches["size"].trace) == 2
    assert set(table.checks) == {"compression between uniform rows", "compression >= 10x",
                                 "accuracy >= float - 0.5 points"}
    with (tmp_path / "dfq_table.csv").open() as f:
        assert [r["method"] for r in csv.DictReader(f)] == list(rows)
    assert (tmp_path / "dfq_layers.png").stat().st_size > 10_000


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.rtlsim
def test_recipe_builds_and_simulates_bit_exactly(bit_exact_run):
    plan = bit_exact_run({
        "name": "dfq_tiny", "data": {"dataset": "digits", "limit": 300},
        "train": {"epochs": 3}, "qat": {"epochs": 2},
        "method": {"name": "dfq", "epochs": 2, "warmup_epochs": 1, "report": False,
                   "act_bits": 3},
        "hardware": {"board": "pynq-z1", "target_fps": 50000}, "simulate": {"frames": 20},
    })
    assert {lp.weight_bits for lp in plan.layers.values()} <= {2, 8}
