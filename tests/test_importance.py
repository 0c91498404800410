"""Importance: rank agreement, Hutchinson trace, k·σ rules, channel l1, layer measures."""
from __future__ import annotations

import functools
import json
import random

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau
from torch import nn

from flow.core.errors import ConfigError
from flow.importance import (
    activation_l1,
    check_weights,
    compare,
    compare_measures,
    kendall_tau,
    layer_importance,
    levenshtein,
    rank_order,
    weight_l1,
)
from flow.importance.layer import LayerImportance, hutchinson_trace, normalise
from flow.importance.pruning import (
    keep_strongest_fraction,
    magnitude_prune_fraction,
    structured_keep,
)
from flow.ml.data import Dataset
from flow.ml.train import TrainConfig, train
from flow.models import build_float, get_architecture, ptq_model
from flow.models.prune import (
    apply_unstructured_pruning,
    make_pruning_permanent,
    unstructured_mask,
    weight_threshold,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# --- rank agreement -------------------------------------------------------------------------

def test_kendall_tau_hand_computed():
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    # pairs (0,1): (-)(-)=+1, (0,2): (-)(-)=+1, (1,2): (-)(+)=-1 -> 2/(3*2) * 1
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # a tie contributes sign(0) = 0: pairs 0, +1, +1 -> 2/6 * 2
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / 3)
    with pytest.raises(ConfigError):
        kendall_tau([1, 2], [1, 2, 3])


def test_kendall_tau_matches_scipy_without_ties():
    rng = np.random.default_rng(0)
    for n in (2, 5, 17, 64):
        a, b = rng.permutation(n), rng.normal(size=n)
        assert kendall_tau(a, b) == pytest.approx(kendalltau(a, b).statistic, abs=1e-12)


def _lev_recursive(r: tuple, q: tuple) -> int:
    """Eqs. (9)-(10) of the qsparse paper, literally (tails), memoised."""
    @functools.cache
    def lev(i: int, j: int) -> int:  # lev(r[i:], q[j:])
        if len(q) - j == 0:
            return len(r) - i
        if len(r) - i == 0:
            return len(q) - j
        if r[i] == q[j]:
            return lev(i + 1, j + 1)
        return 1 + min(lev(i + 1, j), lev(i, j + 1), lev(i + 1, j + 1))

    return lev(0, 0)


def test_levenshtein_known_and_against_recursion():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein([], [1, 2]) == 2
    assert levenshtein([1, 2, 3], []) == 3
    assert levenshtein([0, 1, 2, 3], [0, 1, 2, 3]) == 0
    assert levenshtein([0, 1, 2, 3], [1, 0, 2, 3]) == 2  # a swap is two substitutions
    assert levenshtein([0, 1, 2, 3], [3, 0, 1, 2]) == 2  # insert 3 in front, drop it at the end
    rnd = random.Random(0)
    for _ in range(50):
        r = tuple(rnd.randrange(4) for _ in range(rnd.randrange(8)))
        q = tuple(rnd.randrange(4) for _ in range(rnd.randrange(8)))
        assert levenshtein(r, q) == _lev_recursive(r, q)


def test_rank_order_and_compare():
    assert rank_order([0.1, 0.5, 0.3, 0.5]) == [1, 3, 2, 0]  # descending, ties by index
    out = compare([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0])
    assert out["tau"] == -1.0 and out["n"] == 4
    assert out["lev"] == levenshtein([3, 2, 1, 0], [0, 1, 2, 3]) == 4
    assert out["lev_norm"] == 1.0


def test_compare_measures_per_layer_and_over_layers():
    a = {"l1": [1.0, 2.0, 3.0], "l2": [5.0, 4.0], "l3": [9.0]}
    b = {"l1": [1.0, 3.0, 2.0], "l2": [4.0, 5.0], "l3": [1.0]}
    out = compare_measures(a, b)
    assert set(out["per_layer"]) == {"l1", "l2"}  # a single channel has no pairs
    assert out["per_layer"]["l1"]["tau"] == pytest.approx(1 / 3)
    assert out["per_layer"]["l2"]["tau"] == -1.0
    assert out["layers"]["n"] == 3
    scalar = compare_measures({"a": 0.1, "b": 0.3, "c": 0.6}, {"a": 0.2, "b": 0.5, "c": 0.3})
    assert scalar["per_layer"] == {}
    assert scalar["layers"]["tau"] == pytest.approx(1 / 3)
    with pytest.raises(ConfigError, match="different layers"):
        compare_measures({"a": 1.0, "b": 2.0}, {"a": 1.0, "c": 2.0})


# --- Hutchinson ------------------------------------------------------------------------------

def test_hutchinson_trace_matches_exact_hessian():
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    lin1, lin2 = nn.Linear(5, 4, bias=False), nn.Linear(4, 3, bias=False)

    def loss_of(w1, w2):
        return nn.functional.cross_entropy(torch.tanh(x @ w1.T) @ w2.T, y)

    w1, w2 = lin1.weight.detach(), lin2.weight.detach()
    hessian = torch.autograd.functional.hessian
    exact = [
        hessian(lambda w: loss_of(w.view_as(w1), w2), w1.flatten()).trace(),
        hessian(lambda w: loss_of(w1, w.view_as(w2)), w2.flatten()).trace(),
    ]
    p1, p2 = w1.clone().requires_grad_(), w2.clone().requires_grad_()
    est = hutchinson_trace(loss_of(p1, p2), [p1, p2], n_samples=3000, seed=0)
    for e, t in zip(est, exact):
        assert e == pytest.approx(float(t), rel=0.05)


# --- k·σ rules -------------------------------------------------------------------------------

def test_unstructured_threshold_against_numpy():
    w = torch.randn(32, 16, 3, 3, generator=torch.Generator().manual_seed(1))
    wn = w.numpy().astype(np.float64)
    for k in (0.0, 0.5, 1.0, 3.0):
        assert weight_threshold(w, k) == pytest.approx(k * np.std(wn), rel=1e-9)
        mask = unstructured_mask(w, k).numpy()
        np.testing.assert_array_equal(mask, (np.abs(wn) > k * np.std(wn)).astype(np.float32))
    assert unstructured_mask(w, 0.0).all()  # k = 0 prunes nothing (no exact zeros here)
    pruned_at_3 = 1 - unstructured_mask(w, 3.0).mean().item()
    assert pruned_at_3 > 0.99  # ~99.7 % of Gaussian weights lie within 3σ


def test_structured_keep_rule_against_numpy():
    rng = np.random.default_rng(2)
    s = rng.normal(10.0, 1.0, size=64)
    assert structured_keep(s, 0.0) == tuple(range(64))  # k = 0 prunes nothing
    for k in (0.5, 1.0, 2.0, 3.0):
        expect = tuple(np.flatnonzero(s >= s.min() + k * s.std()).tolist())
        assert structured_keep(s, k, min_keep=1) == expect
    assert len(structured_keep(s, 3.0)) < 0.5 * 64  # k = 3 prunes most
    assert structured_keep(s, 100.0, min_keep=3) == tuple(sorted(np.argsort(-s)[:3].tolist()))
    sizes = [len(structured_keep(s, k)) for k in np.arange(0, 3.01, 0.25)]
    assert sizes == sorted(sizes, reverse=True)  # monotone in k


def test_fraction_rules():
    w = torch.tensor([0.5, -0.1, 0.3, -0.7, 0.05, 0.2])
    expect = [0.5, 0.0, 0.3, -0.7, 0.0, 0.0]
    assert magnitude_prune_fraction(w, 0.5).tolist() == pytest.approx(expect)
    assert keep_strongest_fraction([3.0, 1.0, 2.0, 4.0], 0.5) == (0, 3)
    assert keep_strongest_fraction([3.0, 1.0, 2.0, 4.0], 0.75) == (3,)


# --- channel importance ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_net():
    arch = get_architecture("digits_cnn")
    torch.manual_seed(0)
    net = build_float(arch, 16.0).eval()
    x = torch.randint(0, 17, (40, 1, 8, 8)).float()
    return arch, net, x


def test_activation_l1_against_numpy(tiny_net):
    arch, net, x = tiny_net
    seen = {}
    hooks = [net.blocks[n].register_forward_hook(
        lambda m, i, o, n=n: seen.setdefault(n, []).append(o.detach().numpy()))
        for n in arch.layer_names[:-1]]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    got = activation_l1(net, x, batch_size=16)  # batched differently on purpose
    assert set(got) == set(arch.layer_names[:-1])  # the classifier is never scored
    for name, outs in seen.items():
        a = np.concatenate(outs)
        assert (a >= 0).all()  # hooked after the ReLU
        np.testing.assert_allclose(got[name], np.abs(a).sum(axis=(2, 3)).mean(0), rtol=1e-5)


def test_weight_l1_against_numpy(tiny_net):
    arch, net, _ = tiny_net
    got = weight_l1(net)
    for name in arch.layer_names[:-1]:
        w = net.blocks[name][0].weight.detach().numpy()
        np.testing.assert_allclose(got[name], np.abs(w).reshape(len(w), -1).sum(1), rtol=1e-6)


def test_activation_l1_on_quant_model(tiny_net):
    arch, net, x = tiny_net
    q = ptq_model(arch, net, arch.uniform_plan(4, 4, 5), x[:20])
    scores = activation_l1(q, x)
    assert all(len(v) == s.out for v, s in zip(scores.values(), arch.layers))
    assert all(np.isfinite(v).all() for v in scores.values())


# --- unstructured masks in built networks ----------------------------------------------------

def test_masks_survive_training_and_fold_for_export(tiny_net):
    arch, net, x = tiny_net
    plan = arch.uniform_plan(4, 4, 5).with_layer("conv4", prune_k=1.0)
    q = ptq_model(arch, net, plan, x[:20])
    layer = q.blocks["conv4"][0]
    zeros = layer.weight == 0
    expect = 1 - unstructured_mask(net.blocks["conv4"][0].weight, 1.0).mean().item()
    assert zeros.float().mean().item() == pytest.approx(expect)
    y = torch.randint(0, 10, (len(x),))
    train(q, x, y, TrainConfig(2, lr=1e-2, batch_size=8), "t", x, y)  # best-state reload too
    assert (q.blocks["conv4"][0].weight[zeros] == 0).all()
    assert (q.blocks["conv3"][0].weight != 0).all()  # unpruned layers untouched
    make_pruning_permanent(q)
    layer = q.blocks["conv4"][0]
    assert isinstance(layer.weight, nn.Parameter) and not hasattr(layer, "weight_mask")
    assert (layer.weight[zeros] == 0).all()
    assert not any("weight_mask" in k for k in q.state_dict())
    apply_unstructured_pruning(q, plan)  # re-applying on zeros is idempotent in effect
    assert (q.blocks["conv4"][0].weight[zeros] == 0).all()


# --- layer importance ------------------------------------------------------------------------

def test_check_weights():
    w = check_weights(None)
    assert set(w) == {"quant", "hessian", "prune", "data_free"} and sum(w.values()) == 1
    assert check_weights({"quant": 0.5, "prune": 0.5}) == {"quant": 0.5, "prune": 0.5}
    with pytest.raises(ConfigError, match="unknown measures \\['bogus'\\]"):
        check_weights({"bogus": 1.0})
    with pytest.raises(ConfigError, match="sum to 0.9"):
        check_weights({"quant": 0.5, "prune": 0.4})
    with pytest.raises(ConfigError):
        check_weights({"quant": -0.5, "prune": 1.5})


def test_normalise():
    assert normalise([1.0, 3.0]) == [0.25, 0.75]
    assert normalise([-1.0, 1.0]) == [0.0, 1.0]  # negative increases count as 0
    assert normalise([0.0, 0.0]) == [0.5, 0.5]


def _TinyData(n=96, seed=0) -> Dataset:
    """A Dataset of random digits-like images."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 17, (n, 1, 8, 8), generator=g).float()
    y = torch.randint(0, 10, (n,), generator=g)
    return Dataset("tiny", x, y, x[:48], y[:48], x[:48], y[:48], (1, 8, 8), 10, 16)


def test_layer_importance_measures_and_json(tiny_net, tmp_path):
    arch, net, _ = tiny_net
    data = _TinyData()
    imp = layer_importance(arch, net, data, hutchinson_samples=4, calib_samples=32,
                           hessian_samples=32)
    assert imp.layers == arch.layer_names
    for m, values in imp.normalised.items():
        assert len(values) == len(arch.layer_names)
        assert sum(values) == pytest.approx(1.0) and min(values) >= 0, m
    assert sum(imp.combined) == pytest.approx(1.0)
    params = [g.params for g in arch.geometry()]
    assert imp.normalised["data_free"] == pytest.approx([p / sum(params) for p in params])
    assert sorted(imp.order(), key=imp.score) == imp.order()
    imp.save(tmp_path / "importance.json")
    back = LayerImportance.from_dict(json.loads((tmp_path / "importance.json").read_text()))
    assert back.combined == pytest.approx(imp.combined) and back.order() == imp.order()
    rows = imp.rows()
    assert {r["rank"] for r in rows} == set(range(1, len(rows) + 1))
    only = layer_importance(arch, net, data, weights={"data_free": 1.0})
    assert list(only.normalised) == ["data_free"] and only.combined == pytest.approx(
        only.normalised["data_free"])
