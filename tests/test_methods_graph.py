"""Plans on graph networks: coupled channel units, every method's plan on digits_resnet and
digits_mobilenet, and the analytic screen of a DAG."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from flow.core.errors import ConfigError
from flow.importance.channel import activation_l1, weight_l1
from flow.importance.groups import channel_units, coupled_keep, prunable_units, unit_of
from flow.importance.layer import layer_importance
from flow.methods.aqp import make_plan as aqp_make_plan
from flow.methods.aqp.layer_search import search as aqp_search
from flow.methods.aqp.report import baseline_plans
from flow.methods.base import MethodContext
from flow.methods.dfq.bilevel import discrete_weights, mixtures
from flow.methods.dfq.bilevel import search as dfq_search
from flow.methods.params import AqpParams, DfqParams, PlanFileParams, QsparseParams, UniformParams
from flow.methods.plan_file import make_plan as plan_file_plan
from flow.methods.qsparse.schedule import ChannelMasks, quant_start, run_schedule
from flow.methods.uniform import make_plan as uniform_plan
from flow.ml.data import load_dataset
from flow.ml.train import TrainConfig, predict, train
from flow.models import (
    Architecture,
    LayerSpec,
    OpSpec,
    build_float,
    get_architecture,
    ptq_model,
    transfer_weights,
)
from flow.recipe.plan import CompressionPlan
from flow.search.hardware import fold, plan_layers, screen
from flow.search.space import SearchSpace, channel_ranking
from hw_models.boards import get_board
from hw_models.cost import (
    AddStreamsLayer,
    DuplicateStreamsLayer,
    GlobalAccPoolLayer,
    MvauLayer,
    PoolLayer,
    VvauLayer,
    layer_cycles,
    load_calibration,
)

GRAPHS = ("digits_resnet", "digits_mobilenet")
PYNQ = get_board("pynq-z1")


def _conv(name, out, k=3, act="relu", inputs=(), groups=1):
    return LayerSpec(name, "conv", out, k, 1, k // 2, groups, act, inputs)


# a residual block on the stem, then a depthwise-separable block: the depthwise layer carries the
# add's channels, so it joins the stem's unit {stem, res, dw}; pw stands alone
TINY = Architecture("tiny", (1, 4, 4), (
    _conv("stem", 4),
    _conv("res", 4, act=None),
    OpSpec("add", "add", act="relu", inputs=("res", "stem")),
    _conv("dw", 4, groups=4),
    _conv("pw", 6, k=1),
    OpSpec("pool", "gap"),
    LayerSpec("fc", "linear", 3, act=None),
))


# ----------------------------------------------------------------------------- channel units


def test_units_of_a_residual_and_depthwise_network():
    units = {u.name: u for u in channel_units(TINY)}
    assert units["stem"].layers == ("stem", "res", "dw") and not units["stem"].fixed
    assert units["pw"].layers == ("pw",)
    assert units["fc"].fixed
    assert [u.name for u in prunable_units(TINY)] == ["stem", "pw"]


def test_depthwise_on_the_network_input_keeps_every_channel():
    arch = Architecture("dw_first", (2, 4, 4), (
        _conv("dw", 2, groups=2), _conv("pw", 4, k=1), OpSpec("pool", "gap"),
        LayerSpec("fc", "linear", 3, act=None)))
    assert unit_of(channel_units(arch), "dw").fixed
    assert [u.name for u in prunable_units(arch)] == ["pw"]


def test_group_selection_is_the_sum_of_normalised_scores():
    """Closed form: S(c) = stem(c)/Σstem + res(c)/Σres + dw(c)/Σdw, the top 2 kept by all."""
    scores = {"stem": [100.0, 120.0, 100.0, 700.0], "res": [5.0, 3.0, 1.0, 1.0],
              "dw": [0.0, 0.0, 0.0, 0.0], "pw": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}
    ref = sum(np.asarray(scores[n]) / np.sum(scores[n]) for n in ("stem", "res")) + 0.25
    expect = tuple(sorted(np.argsort(-ref, kind="stable")[:2].tolist()))
    assert expect == (0, 3)  # the raw sum would keep (1, 3): the stem's scale would decide
    keep = coupled_keep(channel_units(TINY), scores, {"stem": 2, "pw": 3})
    assert keep["stem"] == keep["res"] == keep["dw"] == expect
    assert keep["pw"] == (3, 4, 5) and keep["fc"] is None
    plan = TINY.uniform_plan(4, 4, 4)
    for name, k in keep.items():
        plan = plan.with_layer(name, keep=k)
    TINY.check_plan(plan)


# ----------------------------------------------------------------------------- every method


@pytest.fixture(scope="module", params=GRAPHS)
def ctx(request, torch_one_thread) -> MethodContext:
    data = load_dataset("digits", seed=0, limit=300)
    arch = get_architecture(request.param)
    torch.manual_seed(0)
    net = build_float(arch, data.pixel_max)
    train(net, data.x_train, data.y_train, TrainConfig(2, lr=3e-3), "float")
    return MethodContext(arch, data, net.eval(), TrainConfig(1), min_bits=2, seed=0)


def _check_coupled(arch: Architecture, plan: CompressionPlan) -> None:
    """check_plan, and the rules checked here independently of it: every add's producers keep
    one set, a depthwise layer keeps its producer's channels."""
    arch.check_plan(plan)
    kept = {n: arch.kept(plan, n) for n in arch.layer_names}
    for node in arch.nodes:
        if isinstance(node, OpSpec) and node.kind == "add":
            a, b = (arch.carrier(i).name for i in arch.inputs_of(node.name))
            assert kept[a] == kept[b], (node.name, a, b)
        if isinstance(node, LayerSpec) and node.depthwise:
            assert kept[node.name] == kept[arch.channel_source(node.name)], node.name


def test_uniform_and_plan_file(ctx, tmp_path):
    params = UniformParams(name="uniform", weight_bits=4, act_bits=4)
    plan = uniform_plan(ctx, params, tmp_path).plan
    _check_coupled(ctx.arch, plan)
    units = prunable_units(ctx.arch)
    scores = activation_l1(ctx.float_model, ctx.data.x_train[:64])
    coupled = CompressionPlan.from_dict(plan.to_dict())
    for name, k in coupled_keep(units, scores, {u.name: u.channels // 2 for u in units}).items():
        coupled = coupled.with_layer(name, keep=k)
    coupled.save(tmp_path / "coupled.yaml")
    loaded = plan_file_plan(ctx, PlanFileParams(name="plan", path=str(tmp_path / "coupled.yaml")),
                            tmp_path).plan
    _check_coupled(ctx.arch, loaded)
    group = next(u for u in units if len(u.layers) > 1)
    broken = loaded.with_layer(group.layers[1], keep=tuple(range(group.channels - 1)))
    with pytest.raises(ConfigError, match=group.layers[1]):
        ctx.arch.check_plan(broken)


def test_search_space_per_unit(ctx):
    ranking = channel_ranking(ctx.float_model, ctx.data.x_train[:64])
    space = SearchSpace.build(ctx.arch, ranking, (2, 4), (2, 4), (0.5, 1.0), 2, 4)
    keeps = {k for k in space.distributions() if k.endswith(".keep")}
    assert keeps == {f"{u.name}.keep" for u in prunable_units(ctx.arch)}
    # the projection shortcut is the add's second input: requantized at the main branch's bits
    shared = {"digits_resnet": {"layer2.0.shortcut": "layer2.0.conv2"}}.get(ctx.arch.name, {})
    assert space.act_from == shared
    acts = {k.removesuffix(".a") for k in space.distributions() if k.endswith(".a")}
    assert acts == set(ctx.arch.layer_names[:-1]) - set(shared)
    rng = np.random.default_rng(0)
    for _ in range(5):
        choices = {k: v[rng.integers(len(v))] for k, v in space.distributions().items()}
        plan = space.plan(choices)
        _check_coupled(ctx.arch, plan)
        assert space.choices(plan) == choices
        for name, main in shared.items():
            assert plan.layers[name].act_bits == plan.layers[main].act_bits
    half = space.plan({k: v[0] for k, v in space.distributions().items()})
    scores = activation_l1(ctx.float_model, ctx.data.x_train[:64])
    units = prunable_units(ctx.arch)
    expect = coupled_keep(units, scores, {u.name: space.kept(u.name, 0.5) for u in units})
    assert {n: half.layers[n].keep for n in expect} == expect


@pytest.mark.slow  # AQP's structured search on a graph network
def test_aqp_structured_prunes_units(ctx):
    importance = layer_importance(ctx.arch, ctx.float_model, ctx.data,
                                  weights={"data_free": 1.0}, calib_samples=64)
    p = AqpParams(name="aqp", mode="prune", pruning="structured", fixed_layers="none",
                  t_margin=100.0, k_step=1.0, k_max=1.0, calib_samples=64, trial_samples=64,
                  report=False)
    scores = activation_l1(ctx.float_model, ctx.data.x_train[:64])
    result = aqp_search(ctx, importance, scores, p)
    _check_coupled(ctx.arch, result.plan)
    pruned = [t for t in result.trials if t["phase"] == "prune"]
    assert len(pruned) == len(prunable_units(ctx.arch))  # one visit per unit, not per layer
    assert any(lp.keep is not None for lp in result.plan.layers.values())


@pytest.mark.parametrize("schedule", ["one_shot", "layerwise_a"])
def test_qsparse_schedules_prune_units(ctx, schedule):
    p = QsparseParams(name="qsparse", epochs=1, sparsity=0.5, report=False, calib_samples=64)
    r = run_schedule(ctx, p, schedule, 0.5)
    _check_coupled(ctx.arch, r.plan)
    for u in prunable_units(ctx.arch):
        assert len(r.plan.layers[u.name].keep) == u.channels // 2
    out = predict(r.model, ctx.data.x_test[:8])
    assert out.shape == (8, 10) and torch.isfinite(out).all()
    if schedule == "layerwise_a":  # one event per unit, coupled layers named together
        assert [e["unit"] for e in r.events] == [u.label for u in prunable_units(ctx.arch)]
    start = quant_start(ctx, r)  # the qat step's start: the plan's Brevitas network
    assert torch.isfinite(predict(start, ctx.data.x_test[:8])).all()


def test_masked_graph_network_equals_the_physically_pruned_one(ctx):
    """Masks set per unit on the full network give the outputs of the network cut by the plan."""
    net = copy.deepcopy(ctx.float_model).eval()
    masks = ChannelMasks(net, "act_l1")
    torch.manual_seed(1)
    for name in masks.layers:
        masks.set_mask(name, 0.5, torch.rand(masks.units[name].channels).tolist())
    x = ctx.data.x_test[:32]
    masked = predict(net, x)
    masks.remove()
    plan = ctx.arch.uniform_plan(4, 4, 5)
    for name, keep in masks.keep().items():
        plan = plan.with_layer(name, keep=keep)
    _check_coupled(ctx.arch, plan)
    pruned = transfer_weights(net, None, build_float(ctx.arch, ctx.data.pixel_max, plan), plan)
    torch.testing.assert_close(predict(pruned.eval(), x), masked, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # DFQ's supernet on a graph network
def test_dfq_plan_on_a_graph(ctx):
    p = DfqParams(name="dfq", candidates=[2, 8], epochs=1, warmup_epochs=0, report=False)
    r = dfq_search(ctx, p, "size")
    _check_coupled(ctx.arch, r.plan)
    assert {lp.weight_bits for lp in r.plan.layers.values()} <= {2, 8}
    start = ptq_model(ctx.arch, discrete_weights(ctx, r.net), r.plan, ctx.data.x_train[:64])
    for spec, mix in zip(ctx.arch.layers, mixtures(r.net)):  # the supernet's weights carried
        torch.testing.assert_close(start.blocks[spec.name][0].weight, mix.layer.weight)


@pytest.mark.slow  # every layer-importance measure on a graph network
def test_importance_per_node(ctx):
    w = weight_l1(ctx.float_model)
    for spec in ctx.arch.layers[:-1]:
        weight = ctx.float_model.blocks[spec.name][0].weight.detach().abs()
        assert np.allclose(w[spec.name], weight.flatten(1).sum(1).numpy(), rtol=1e-6)
    a = activation_l1(ctx.float_model, ctx.data.x_train[:16])
    assert set(a) == set(ctx.arch.layer_names[:-1])
    assert all(len(a[s.name]) == s.out for s in ctx.arch.layers[:-1])
    weights = dict.fromkeys(("quant", "hessian", "prune", "data_free"), 0.25)
    li = layer_importance(ctx.arch, ctx.float_model, ctx.data, weights=weights, calib_samples=64,
                          hutchinson_samples=2, hessian_samples=32)
    for spec, raw in zip(ctx.arch.layers, li.raw["data_free"]):  # weights per layer
        src = ctx.arch.carrier(ctx.arch.inputs_of(spec.name)[0])
        in_ch = ctx.arch.in_shape[0] if src is None else src.out  # after GAP: one per channel
        assert raw == spec.out * (1 if spec.depthwise else in_ch) * spec.kernel ** 2, spec.name
    assert li.layers == ctx.arch.layer_names
    assert all(np.isfinite(li.raw[m]).all() for m in weights)


# ----------------------------------------------------------------------------- the screen


def _paths(g, start: int, end: int) -> list[list[int]]:
    """Every path start -> end of the HW graph (brute force, the latency's reference)."""
    if start == end:
        return [[end]]
    return [[start, *rest] for s, d, _ in g.edges if s == start for rest in _paths(g, d, end)]


@pytest.mark.parametrize("name", GRAPHS + ("digits_vgg",))
def test_screen_describes_the_graph(name):
    arch = get_architecture(name)
    plan = arch.uniform_plan(4, 4, 4)
    g = fold(plan_layers(arch, plan, 4, PYNQ.part), 20_000)
    count = {k: sum(isinstance(x, k) for x in g.layers) for k in
             (AddStreamsLayer, DuplicateStreamsLayer, GlobalAccPoolLayer, VvauLayer, PoolLayer)}
    nodes = {kind: sum(getattr(n, "kind", "") == kind for n in arch.nodes)
             for kind in ("add", "gap", "maxpool")}
    forks = sum(len(arch.consumers(n)) > 1 for n in ["input", *(x.name for x in arch.nodes)])
    assert count[AddStreamsLayer] == nodes["add"] and count[GlobalAccPoolLayer] == nodes["gap"]
    assert count[PoolLayer] == nodes["maxpool"] and count[DuplicateStreamsLayer] == forks
    assert count[VvauLayer] == sum(s.depthwise for s in arch.layers)
    for x in g.layers:
        if isinstance(x, AddStreamsLayer):
            assert x.output_bits == max(x.input_bits) + 1
    fc = g.layers[-1]
    assert isinstance(fc, MvauLayer) and fc.mh == 10
    assert fc.mw == arch.geometry()[-1].in_ch
    fig = screen(arch, plan, 4, PYNQ, 5000, 100.0, 32, load_calibration())
    folded = fold(plan_layers(arch, plan, 4, PYNQ.part), int(100e6 / 5000))
    cyc = [layer_cycles(x) for x in folded.layers]
    assert fig.cycles == max(cyc)
    longest = max(sum(cyc[i] for i in path) for path in _paths(folded, 0, len(cyc) - 1))
    assert fig.latency_cycles == longest
    assert fig.resources.lut > 0


def test_screen_follows_pruned_units():
    arch = get_architecture("digits_resnet")
    units = prunable_units(arch)
    scores = {s.name: list(range(s.out)) for s in arch.layers}
    plan = arch.uniform_plan(4, 4, 4)
    for name, k in coupled_keep(units, scores, {u.name: 4 for u in units}).items():
        plan = plan.with_layer(name, keep=k)
    g = plan_layers(arch, plan, 4, PYNQ.part)
    adds = [x for x in g.layers if isinstance(x, AddStreamsLayer)]
    assert adds and all(x.channels == 4 for x in adds)
    full = screen(arch, arch.uniform_plan(4, 4, 4), 4, PYNQ, 5000, 100.0, 32, load_calibration())
    small = screen(arch, plan, 4, PYNQ, 5000, 100.0, 32, load_calibration())
    assert small.resources.lut < full.resources.lut


def _described(layer) -> tuple:
    """A HW layer's kind and what does not depend on folding or on the weights' values."""
    fields = {
        "MVAU": ("mw", "mh", "vectors", "weight_bits", "input_bits"),
        "VVAU": ("channels", "kernel", "dim", "weight_bits", "input_bits"),
        "Thresholding": ("channels", "vectors", "output_bits"),
        "ConvolutionInputGenerator": ("channels", "ifm_dim", "ofm_dim", "kernel", "stride",
                                      "depthwise", "input_bits"),
        "FMPadding": ("channels", "img_dim", "padding", "input_bits"),
        "Pool": ("channels", "kernel", "out_pixels", "input_bits", "function"),
        "GlobalAccPool": ("channels", "vectors", "input_bits", "output_bits"),
        "DuplicateStreams": ("channels", "vectors", "outputs", "input_bits"),
        "AddStreams": ("channels", "vectors", "input_bits", "output_bits"),
    }[layer.kind]
    return (layer.kind, *(getattr(layer, f) for f in fields))


@pytest.mark.slow
@pytest.mark.parametrize("name", GRAPHS + ("digits_vgg",))
def test_screen_builds_finns_layers(name, tmp_path, torch_one_thread):
    """The screen's HW layers are FINN's own (counted and described from the specialised FINN
    model of the same plan), widths converters and FIFOs aside; its throughput is SetFolding's
    and its resources near FINN's estimate of that folding."""
    from qonnx.core.modelwrapper import ModelWrapper

    import hw_models.finn_ops  # noqa: F401  (densiflow's RTL ops, before loading their model)
    from flow.finn import build_dataflow
    from flow.ml.export import export_model
    from hw_models.cost.nodes import model_layers
    from hw_models.folding import Budget
    from hw_models.folding.finn_view import finn_figures, finn_setfolding

    data = load_dataset("digits", seed=0, limit=300)
    arch = get_architecture(name)
    torch.manual_seed(0)
    plan = arch.uniform_plan(4, 3, 4).with_layer(arch.layer_names[1], weight_bits=2)
    units = prunable_units(arch)
    for layer, k in coupled_keep(units, {s.name: list(range(s.out)) for s in arch.layers},
                                 {u.name: u.channels * 3 // 4 for u in units}).items():
        plan = plan.with_layer(layer, keep=k)
    q = ptq_model(arch, build_float(arch, data.pixel_max).eval(), plan, data.x_train[:64]).eval()
    qonnx = export_model(q, data.in_shape, data.input_bits, tmp_path / "model.qonnx.onnx")
    build = build_dataflow(qonnx, "pynq-z1", 5000, tmp_path / "finn", verify_frames=0, source=name)
    specialised = ModelWrapper(str(build.path("specialize_layers")))
    finn = model_layers(specialised, PYNQ.part, from_geometry=True)
    ours = plan_layers(arch, plan, data.input_bits, PYNQ.part).layers
    assert sorted(map(_described, ours)) == sorted(map(_described, finn))
    # FINN's SetFolding at the same target (densiflow's RTL ops by their HLS twins' rules), and
    # FINN's estimate of it with its width converters and FIFOs
    target = build.target_cycles_per_frame
    setfolding = finn_figures(finn_setfolding(specialised, target), PYNQ, build.clock_mhz,
                              Budget(), build.fifo_depth)
    fig = screen(arch, plan, data.input_bits, PYNQ, build.target_fps, build.clock_mhz,
                 build.fifo_depth, load_calibration())
    assert fig.cycles == setfolding.cycles
    assert fig.resources.lut == pytest.approx(setfolding.resources.lut, rel=0.1)
    assert fig.resources.bram18 == pytest.approx(setfolding.resources.bram18, abs=2)


@pytest.mark.slow
def test_search_on_a_residual_network(tmp_path, torch_one_thread):
    """The whole search (seeds, trials, the screen, QAT of the best, FINN on the final plans) on
    digits_resnet: every plan it made fits the coupled groups."""
    from helpers import tiny_recipe

    from flow.recipe.config import parse_recipe
    from flow.search import run_search

    data = tiny_recipe("resnet", trials=2, population=2, finn="none", qat_top=1, report=False,
                       builtin_seeds=["importance"], weight_bits=[3, 4], act_bits=[3, 4])
    recipe = parse_recipe(data | {"model": {"arch": "digits_resnet"}})
    outcome = run_search(recipe, tmp_path, workers=1)
    arch = get_architecture("digits_resnet")
    assert outcome.candidates and outcome.chosen is not None
    plans = [CompressionPlan.from_dict(c.plan) for c in outcome.candidates]
    for plan in plans:
        _check_coupled(arch, plan)
    assert any(lp.keep is not None for plan in plans for lp in plan.layers.values())


def test_aqp_fixed_pruning_baselines_prune_units(ctx):
    p = AqpParams(name="aqp", baseline_prune=[0.5], baseline_bits=[4])
    scores = activation_l1(ctx.float_model, ctx.data.x_train[:64])
    plans = baseline_plans(ctx, p, scores)
    pruned = plans["Fixed prune 50% (W8)"]
    _check_coupled(ctx.arch, pruned)
    for u in prunable_units(ctx.arch):
        assert len(pruned.layers[u.name].keep) == u.channels // 2


@pytest.mark.slow
def test_aqp_report_on_a_residual_network(tmp_path, torch_one_thread):
    """AQP with its report (every mode, the fixed baselines fine-tuned, table and figures)."""
    data = load_dataset("digits", seed=0, limit=300)
    arch = get_architecture("digits_resnet")
    torch.manual_seed(0)
    net = build_float(arch, data.pixel_max)
    train(net, data.x_train, data.y_train, TrainConfig(2, lr=3e-3), "float")
    ctx = MethodContext(arch, data, net.eval(), TrainConfig(1), min_bits=2, seed=0)
    p = AqpParams(name="aqp", pruning="structured", importance={"data_free": 1.0},
                  max_bits=4, k_step=1.0, k_max=1.0, calib_samples=64, trial_samples=64,
                  baseline_bits=[4], baseline_prune=[0.5])
    out = aqp_make_plan(ctx, p, tmp_path)
    _check_coupled(arch, out.plan)
    table = json.loads((tmp_path / "aqp_table.json").read_text())
    assert [r["layer"] for r in table["per_layer"]] == arch.layer_names
    assert (tmp_path / "aqp_layers.png").stat().st_size > 0
