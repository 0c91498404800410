"""AQP: parameter checks, the margin rule on real searches, plan structure per mode, report."""
from __future__ import annotations

import csv
import json

import pytest
from helpers import method_context
from pydantic import ValidationError

from flow.core.errors import ConfigError
from flow.importance.pruning import structured_keep
from flow.methods.aqp import make_plan as aqp_make_plan
from flow.methods.aqp.report import AqpClaimCheck, AqpRow, AqpTable, claim_check
from flow.methods.base import get_method
from flow.methods.params import AqpParams
from flow.recipe.config import parse_recipe
from flow.recipe.plan import CompressionPlan

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def ctx(torch_one_thread):
    return method_context(400, 12)


FAST = {"report": False, "k_step": 0.5}


def make_plan(ctx, params: dict, out) -> CompressionPlan:
    return aqp_make_plan(ctx, AqpParams(name="aqp", **params), out).plan


@pytest.fixture(scope="module")
def runs(ctx, tmp_path_factory):
    """One real search per mode (and structured), with its log."""
    out = {}
    for key, params in {
        "quant": {"mode": "quant"},
        "prune": {"mode": "prune"},
        "combined": {"mode": "combined", "t_margin": 0.1},
        "structured": {"mode": "combined", "pruning": "structured", "t_margin": 0.1},
    }.items():
        folder = tmp_path_factory.mktemp(key)
        plan = make_plan(ctx, {**FAST, **params}, folder)
        log = json.loads((folder / "aqp_search.json").read_text())
        out[key] = (plan, log["searches"][params["mode"]], folder)
    return out


@pytest.mark.slow
def test_unknown_and_bad_params(ctx):
    for bad in ({"bogus": 1}, {"mode": "both"}, {"pruning": "channels"}, {"t_margin": -1},
                {"k_step": 0}, {"act_bits": "auto"}, {"importance": {"quant": 0.7}},
                {"importance": {"hessian": 0.5, "nope": 0.5}}, {"baseline_prune": [1.5]},
                {"max_bits": 9}):
        with pytest.raises(ConfigError, match=f"method.{next(iter(bad))}"):
            parse_recipe({"name": "x", "method": {"name": "aqp", **bad}})
    with pytest.raises(ValueError, match=r"fixed_layers: unknown layers \['conv9'\]"):
        AqpParams(name="aqp", fixed_layers=["conv9"]).fixed(ctx.arch.layer_names)
    p = AqpParams(name="aqp")
    assert p.mode == "combined" and p.pruning == "unstructured" and p.k_max == 3.0
    assert get_method("aqp") is aqp_make_plan


@pytest.mark.slow
@pytest.mark.parametrize("key", ["quant", "prune", "combined", "structured"])
def test_never_accepts_beyond_margin(runs, key):
    _plan, search, _ = runs[key]
    trials = search["trials"]
    assert trials
    for t in trials:
        assert t["accepted"] == (t["delta"] <= t["margin"])
        if t["accepted"]:
            assert t["delta"] <= t["margin"]
            assert t["val_loss"] - t["ref_loss"] == pytest.approx(t["delta"])
    # the per-layer increases telescope: the whole search stays within t_margin
    t_margin = 0.1 if key in ("combined", "structured") else 0.03
    assert search["final_val_loss"] - search["start_val_loss"] <= t_margin + 1e-9
    margins = {t["layer"]: t["margin"] for t in trials}
    assert sum(margins.values()) == pytest.approx(t_margin)  # shares of the searched layers
    # each phase stops at its first rejection
    for layer in margins:
        for phase in ("bits", "prune"):
            acc = [t["accepted"] for t in trials if t["layer"] == layer and t["phase"] == phase]
            assert acc == sorted(acc, reverse=True)


@pytest.mark.slow
def test_margin_rule_was_exercised(runs):
    trials = [t for _, s, _ in runs.values() for t in s["trials"]]
    assert any(t["accepted"] for t in trials) and any(not t["accepted"] for t in trials)


@pytest.mark.slow
def test_plan_follows_last_accepted_step(runs):
    plan, search, folder = runs["combined"]
    assert CompressionPlan.load(folder / "plan.yaml") == plan
    for name, lp in plan.layers.items():
        accepted = [t for t in search["trials"] if t["layer"] == name and t["accepted"]]
        bits = [t["weight_bits"] for t in accepted if t["phase"] == "bits"]
        ks = [t["k"] for t in accepted if t["phase"] == "prune"]
        assert lp.weight_bits == (bits[-1] if bits else 8)
        assert lp.prune_k == (ks[-1] if ks else 0.0)
    for f in ("importance.json", "channel_importance.json", "aqp_search.json", "plan.yaml"):
        assert (folder / f).is_file()


@pytest.mark.slow
def test_mode_structure(runs, ctx):
    names = ctx.arch.layer_names
    ends = (names[0], names[-1])
    quant, _, _ = runs["quant"]
    assert all(lp.prune_k == 0 and lp.keep is None for lp in quant.layers.values())
    prune, _, _ = runs["prune"]
    assert all(lp.weight_bits == 8 and lp.keep is None for lp in prune.layers.values())
    assert all(lp.act_bits == 8 for n, lp in prune.layers.items() if n != names[-1])
    for plan, _, _ in runs.values():  # default fixed_layers: "ends" stay 8-bit, unpruned
        for n in ends:
            assert plan.layers[n].weight_bits == 8 and plan.layers[n].prune_k == 0
        assert plan.layers[names[-1]].act_bits is None and plan.layers[names[-1]].keep is None
        for lp in plan.layers.values():  # activations follow weights, floored at 2
            assert lp.act_bits is None or lp.act_bits == max(lp.weight_bits, 2)
    structured, _, _ = runs["structured"]
    assert all(lp.prune_k == 0 for lp in structured.layers.values())


@pytest.mark.slow
def test_structure_when_every_step_passes(ctx, tmp_path):
    """With an unbounded margin every step is accepted: the extremes of each mode."""
    names = ctx.arch.layer_names
    common = {**FAST, "t_margin": 1e9, "k_step": 1.0, "fixed_layers": "none",
              "importance": {"data_free": 1.0}}
    quant = make_plan(ctx, {**common, "mode": "quant"}, tmp_path / "q")
    assert [lp.weight_bits for lp in quant.layers.values()] == [2] * len(names)
    prune = make_plan(ctx, {**common, "mode": "prune"}, tmp_path / "p")
    assert all(lp.prune_k == 3.0 and lp.weight_bits == 8 for lp in prune.layers.values())
    struct = make_plan(ctx, {**common, "mode": "combined", "pruning": "structured"}, tmp_path / "s")
    scores = json.loads((tmp_path / "s" / "channel_importance.json").read_text())["act_l1"]
    for name in names[:-1]:
        assert struct.layers[name].keep == structured_keep(scores[name], 3.0, 2)
        assert len(struct.layers[name].keep) < 0.5 * ctx.arch.layers[names.index(name)].out
        assert struct.layers[name].weight_bits == 2
    assert struct.layers[names[-1]].keep is None


def test_claim_check_rule():
    def row(method, kind, bits, acc):
        return AqpRow(method=method, kind=kind, stage="s", model="m", params_million=0.05,
                      nonzero_params=1, avg_bits=bits, param_size_mbyte=0.0, weight_mbit=0.0,
                      weight_sparse_mbit=None, compression_ratio=32 / bits, val_accuracy=acc,
                      test_accuracy=acc, accuracy_diff_points=100 * (acc - 0.98), qat_s=None)

    rows = [row("Float baseline", "float", 32, 0.98), row("AQP (combined)", "adaptive", 2.5, 0.978),
            row("Fixed W2A2", "fixed", 2.0, 0.97), row("Fixed W3A3", "fixed", 3.0, 0.99)]
    check = claim_check(rows, "AQP (combined)")
    assert check.beats_smaller_fixed == {"Fixed W2A2": True} and check.passed
    assert check.loss_ok and check.bits_ok and check.accuracy_diff_points == pytest.approx(-0.2)
    rows[2] = rows[2].model_copy(update={"test_accuracy": 0.978})  # a tie is not a win
    assert not claim_check(rows, "AQP (combined)").passed
    rows[1] = rows[1].model_copy(update={"avg_bits": 3.5})  # above max_avg_bits; W3A3 smaller
    check = claim_check(rows, "AQP (combined)")
    assert not check.bits_ok and check.beats_smaller_fixed == {"Fixed W2A2": False,
                                                                "Fixed W3A3": False}


def test_rows_refuse_unknown_fields_and_are_frozen():
    with pytest.raises(ValidationError, match="test_acc"):
        AqpRow.model_validate({"test_acc": 0.9})
    check = AqpClaimCheck(chosen="c", accuracy_diff_points=0.0, avg_bits=2.0, loss_ok=True,
                          bits_ok=True, beats_smaller_fixed={}, passed=True)
    with pytest.raises(ValidationError, match="frozen"):
        check.passed = False


@pytest.mark.slow
def test_report_outputs(ctx, tmp_path):
    params = {"k_step": 1.0, "baseline_bits": [2, 8], "baseline_prune": [0.5]}
    plan = make_plan(ctx, params, tmp_path)
    table = AqpTable.model_validate_json((tmp_path / "aqp_table.json").read_text())
    methods = [r.method for r in table.rows]
    assert methods == ["Float baseline", "AQP (quant)", "AQP (prune)", "AQP (combined)",
                       "Fixed W2A2", "Fixed W8A8", "Fixed prune 50% (W8)"]
    rows = {r.method: r for r in table.rows}
    assert rows["Fixed W2A2"].avg_bits == pytest.approx(2.0)
    assert rows["Fixed prune 50% (W8)"].params_million < rows["Fixed W8A8"].params_million
    aqp = rows["AQP (combined)"]
    assert aqp.param_size_mbyte == pytest.approx(aqp.avg_bits * 47376 / 8 / 1e6)
    assert aqp.weight_mbit >= 8 * aqp.param_size_mbyte  # dense storage holds the zeros too
    assert aqp.stage == "QAT fine-tune, 1 epochs"
    assert rows["Float baseline"].stage == "float training"
    assert rows["Float baseline"].weight_mbit == pytest.approx(32 * 47376 / 1e6)
    with (tmp_path / "aqp_table.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["method"] for r in csv_rows] == methods
    assert list(csv_rows[0]) == list(AqpRow.model_fields)
    for png in ("aqp_tradeoff.png", "aqp_layers.png"):
        assert (tmp_path / png).stat().st_size > 10_000
    assert table.check.chosen == table.chosen == "AQP (combined)"
    assert [r.layer for r in table.per_layer] == [r.layer for r in table.importance] \
        == ctx.arch.layer_names
    assert CompressionPlan.load(tmp_path / "plan.yaml") == plan
