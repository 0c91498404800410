"""qsparse ("Learning Low-Precision Structured Subnetworks Using Joint Layerwise Channel Pruning
and Uniform Quantization"): the moving-average quantizers against closed forms, their way
through QONNX and FINN (zero point in the thresholds), the pruning schedules, and the recipe end to
end."""
from __future__ import annotations

import copy
import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import Uint8ActPerTensorFloat
from helpers import method_context
from torch import nn

from flow.core.errors import ConfigError
from flow.finn.zero_points import ExtractZeroPoints
from flow.methods.params import QsparseParams
from flow.methods.qsparse.report import (
    QsparseRow,
    QsparseTable,
    RankAgreement,
    claim_checks,
    rank_agreement,
    run_report,
)
from flow.methods.qsparse.schedule import (
    SCHEDULES,
    ChannelMasks,
    ScheduleResult,
    mask_events,
    run_schedule,
    train_with_masks,
    zhu_gupta,
)
from flow.ml.train import TrainConfig, predict
from flow.models import (
    build_float,
    build_quant,
    calibrate,
    get_architecture,
    transfer_weights,
)
from flow.models.quantizers import (
    MovingAverageAsymQuant,
    MovingAverageIntWeightPerChannel,
    MovingAverageSymQuant,
    MovingAverageUintAct,
    asym_scale_zero_point,
)
from flow.recipe.plan import CompressionPlan

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ----------------------------------------------------------------------------- Algorithms 2 and 3


def test_activation_bounds_are_the_running_mean_of_batch_extremes():
    q = MovingAverageAsymQuant(bit_width=3).train()
    for low, high in [(-1.0, 2.0), (-3.0, 4.0), (0.0, 6.0)]:
        q(torch.tensor([low, 0.5, high]))
    assert int(q.steps) == 3
    assert float(q.lower) == pytest.approx((-1 - 3 + 0) / 3)
    assert float(q.upper) == pytest.approx((2 + 4 + 6) / 3)
    q.eval()
    q(torch.tensor([-100.0, 100.0]))  # eval: frozen
    assert float(q.upper) == pytest.approx(4.0) and int(q.steps) == 3


def test_scale_and_zero_point_on_known_bounds():
    # l = -1, u = 3, b = 2: s = (u - l) / 2^b = 1, z = round(1 / 1) = 1
    s, z = asym_scale_zero_point(torch.tensor(-1.0), torch.tensor(3.0), 2)
    assert float(s) == 1.0 and float(z) == 1.0
    q = MovingAverageAsymQuant(bit_width=2).train()
    q(torch.tensor([-1.0, 3.0]))  # one step: l = -1, u = 3
    y, scale, zero_point, bit_width = q.eval()(torch.tensor([-1.2, -0.4, 0.6, 2.9, 7.0]))
    # ĥ = clip(round(h/s) + z; 0, 3) = [0, 1, 2, 3, 3]; output s·(ĥ - z)
    assert y.tolist() == [-1.0, 0.0, 1.0, 2.0, 2.0]
    assert (float(scale), float(zero_point), float(bit_width)) == (1.0, 1.0, 2.0)
    # s = (u - l)/2^b with l = -0.5, u = 1.5, b = 3: s = 0.25, z = round(2) = 2
    s, z = asym_scale_zero_point(torch.tensor(-0.5), torch.tensor(1.5), 3)
    assert (float(s), float(z)) == (0.25, 2.0)


def test_weight_scale_is_the_running_mean_of_channel_maxima():
    q = MovingAverageSymQuant(bit_width=3, scaling_per_output_channel_shape=(2, 1)).train()
    q(torch.tensor([[1.0, -2.0], [0.5, 0.25]]))
    y, scale, zero_point, _ = q(torch.tensor([[4.0, 0.0], [-1.5, 0.0]]))
    # m = ((2 + 4)/2, (0.5 + 1.5)/2) = (3, 1); s = m / (2^2 - 1)
    assert scale.flatten().tolist() == pytest.approx([1.0, 1 / 3])
    assert float(zero_point) == 0.0
    # 4/1 = 4 -> clipped to 3; -1.5/(1/3) = -4.5 -> clipped to -3 (narrow range)
    assert y.flatten().tolist() == pytest.approx([3.0, 0.0, -1.0, 0.0])


def test_brevitas_layers_report_the_quantizers_scale_and_zero_point():
    act = QuantIdentity(act_quant=MovingAverageUintAct, bit_width=4).train()
    act(torch.tensor([[-2.0, 6.0]]))
    act.eval()
    assert float(act.act_quant.scale()) == pytest.approx(8 / 16)
    assert float(act.act_quant.zero_point()) == 4.0  # round(2 / 0.5)
    conv = QuantConv2d(2, 3, 1, bias=False, weight_quant=MovingAverageIntWeightPerChannel,
                       weight_bit_width=4).eval()
    expected = conv.weight.detach().abs().flatten(1).amax(1) / 7
    assert conv.quant_weight().scale.flatten().tolist() == pytest.approx(expected.tolist())


# ----------------------------------------------------------------------------- the plan


def test_default_quantizer_keeps_plans_as_they_were():
    arch = get_architecture("digits_cnn")
    plan = arch.uniform_plan(4, 4, 5)
    assert "quantizer" not in plan.to_dict()["layers"]["conv1"]
    explicit = arch.uniform_plan(4, 4, 5, quantizer="default")
    assert explicit.digest() == plan.digest() and explicit.to_dict() == plan.to_dict()
    moving = arch.uniform_plan(4, 4, 5, quantizer="moving_average")
    assert moving.digest() != plan.digest()
    assert CompressionPlan.from_dict(moving.to_dict()) == moving


def test_moving_average_needs_two_weight_bits():
    with pytest.raises(ConfigError, match="moving_average"):
        CompressionPlan.from_dict({"input_bits": 4, "layers": {
            "a": {"weight_bits": 1, "act_bits": 2, "quantizer": "moving_average"}}})
    with pytest.raises(ConfigError, match="quantizer"):
        CompressionPlan.from_dict({"input_bits": 4, "layers": {
            "a": {"weight_bits": 4, "act_bits": 2, "quantizer": "lsq"}}})


def test_build_quant_uses_the_plans_quantizers():
    arch = get_architecture("digits_cnn")
    plan = arch.uniform_plan(4, 3, 5, quantizer="moving_average")
    net = build_quant(arch, 16, plan)
    tq = net.blocks["conv2"][2].act_quant.fused_activation_quant_proxy.tensor_quant
    assert isinstance(tq, MovingAverageAsymQuant) and tq.bits == 3
    assert isinstance(net.blocks["fc1"][0].weight_quant.tensor_quant, MovingAverageSymQuant)
    calibrate(net, [torch.rand(8, 1, 8, 8) * 16])  # as every network a step saves
    build_quant(arch, 16, plan).load_state_dict(net.state_dict())


# ----------------------------------------------------------------------------- zero points in FINN


class _ZeroPointNet(nn.Module):
    """BatchNorm -> asymmetric moving-average quantizer without a ReLU: a nonzero zero point."""

    def __init__(self):
        super().__init__()
        self.inp = QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=4)
        self.c1 = QuantConv2d(1, 4, 3, bias=False, weight_quant=MovingAverageIntWeightPerChannel,
                              weight_bit_width=4)
        self.bn = nn.BatchNorm2d(4)
        self.act = QuantIdentity(act_quant=MovingAverageUintAct, bit_width=3)
        self.c2 = QuantConv2d(4, 6, 4, bias=False, weight_quant=MovingAverageIntWeightPerChannel,
                              weight_bit_width=3)
        self.bn2 = nn.BatchNorm2d(6)
        self.act2 = QuantReLU(act_quant=MovingAverageUintAct, bit_width=3)
        self.fc = QuantLinear(6, 3, bias=False, weight_quant=MovingAverageIntWeightPerChannel,
                              weight_bit_width=4)

    def forward(self, x):
        x = self.act(self.bn(self.c1(self.inp(x / 15))))
        return self.fc(self.act2(self.bn2(self.c2(x))).flatten(1))


@pytest.fixture(scope="module")
def zero_point_qonnx(tmp_path_factory):
    """The trained _ZeroPointNet, its inputs, and its QONNX export."""
    from flow.ml.export import export_model

    torch.manual_seed(0)
    net = _ZeroPointNet()
    x = torch.randint(0, 16, (64, 1, 6, 6)).float()
    y = torch.randint(0, 3, (64,))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(net.train()(x), y).backward()
        opt.step()
    net.eval()
    path = tmp_path_factory.mktemp("zp") / "zp.onnx"
    return net, x, export_model(net, (1, 6, 6), 4, path)


def test_zero_point_is_exported_and_extracted_exactly(zero_point_qonnx):
    from flow.ml.export import qonnx_outputs, verify_export

    net, x, qmodel = zero_point_qonnx
    assert float(net.act.act_quant.zero_point()) > 0
    zps = [float(qmodel.get_initializer(n.input[2])) for n in qmodel.graph.node
           if n.op_type == "Quant" and qmodel.get_initializer(n.input[0]) is None]
    assert any(z > 0 for z in zps)
    verify_export(qmodel, net, x[:8])
    rewritten = copy.deepcopy(qmodel).transform(ExtractZeroPoints())
    for n in rewritten.graph.node:
        if n.op_type == "Quant":
            assert not rewritten.get_initializer(n.input[2]).any()
    np.testing.assert_array_equal(qonnx_outputs(rewritten, x[:16]), qonnx_outputs(qmodel, x[:16]))


@pytest.fixture(scope="module")
def zero_point_build(zero_point_qonnx, tmp_path_factory):
    """FINN's build of the zero-point network after ExtractZeroPoints, checked on 16 frames."""
    from flow.finn import build_dataflow

    _, x, qmodel = zero_point_qonnx
    work = tmp_path_factory.mktemp("zp_finn")
    return build_dataflow(copy.deepcopy(qmodel), "pynq-z1", 1e5, work,
                          verify_inputs=x[:16].numpy())  # prepare_qonnx extracts the zero points


@pytest.mark.slow
def test_finn_absorbs_the_zero_point_into_thresholds(zero_point_qonnx, zero_point_build,
                                                     tmp_path):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    from flow.finn.stages import qonnx_to_finn

    _, _, qmodel = zero_point_qonnx
    with pytest.raises(ValueError, match="zero-point"):  # FINN alone refuses it
        qonnx_to_finn(cleanup_model(copy.deepcopy(qmodel)))
    assert zero_point_build.verification.mismatched_outputs == 0
    assert zero_point_build.verification.max_abs_error < 1e-5
    hw = ModelWrapper(str(zero_point_build.path("hw_python")))
    ops = [n.op_type for n in hw.graph.node]
    assert "Add" not in ops and ops.count("Thresholding") == 3, ops


@pytest.mark.slow
@pytest.mark.rtlsim
def test_zero_point_network_simulates_bit_exactly(zero_point_qonnx, zero_point_build, tmp_path):
    from flow.sim.verify import verify_rtl

    net, x, _ = zero_point_qonnx
    b = zero_point_build
    paths = {k: b.path(k) for k in ("dataflow_parent", "dataflow_python", "dataflow_rtl")}
    frames = x[:16]
    logits = predict(net, frames).numpy()
    cache = os.environ.get("DENSIFLOW_RTLSIM_CACHE")
    result = verify_rtl(paths, frames.numpy(), logits.argmax(1), logits, tmp_path, b.part,
                          b.clock_mhz, b.performance.steady_state_cycles,
                          cache_dir=Path(cache) if cache else tmp_path / "cache")
    assert result.mismatches == 0 and result.agreement_with_pytorch == 1.0


# ----------------------------------------------------------------------------- schedules


def test_zhu_gupta_sparsity_at_known_steps():
    assert zhu_gupta(0, 4, 0.8) == 0.0
    assert zhu_gupta(4, 4, 0.8) == pytest.approx(0.8)
    assert zhu_gupta(2, 4, 0.8) == pytest.approx(0.8 * (1 - 0.5**3))
    assert zhu_gupta(1, 4, 0.8, s_i=0.2) == pytest.approx(0.8 + (0.2 - 0.8) * 0.75**3)
    events = mask_events("stepwise", ["a", "b"], 100, 0.5)
    assert [at for at, _ in events] == [50, 100]
    assert events[0][1] == {"a": pytest.approx(0.4375), "b": pytest.approx(0.4375)}


def test_layerwise_schedule_events_one_layer_each():
    events = mask_events("layerwise_a", ["a", "b", "c", "d"], 40, 0.75)
    assert events == [(10, {"a": 0.75}), (20, {"b": 0.75}), (30, {"c": 0.75}), (40, {"d": 0.75})]
    assert mask_events("one_shot", ["a"], 10, 0.5) == mask_events("scratch", ["a"], 10, 0.5) == []


@pytest.fixture(scope="module")
def ctx(torch_one_thread):
    return method_context(300, 6, {"train": {"epochs": 2}})


def test_layerwise_sets_layer_i_only_at_its_step(ctx):
    net = copy.deepcopy(ctx.float_model)
    masks = ChannelMasks(net, "act_l1")
    set_at: list[tuple[int, str]] = []
    real_set = masks.set_mask
    steps_seen = {"n": 0}

    def spy(name, sparsity, scores):
        set_at.append((steps_seen["n"], name))
        real_set(name, sparsity, scores)

    def count(_module, _inputs):
        steps_seen["n"] += int(net.training)

    masks.set_mask = spy
    handle = net.register_forward_pre_hook(count)
    events = mask_events("layerwise_a", masks.layers, 8, 0.5)
    rows = train_with_masks(net, masks, events, ctx.data, TrainConfig(3, batch_size=64), "test")
    handle.remove()
    masks.remove()
    assert set_at == [(at, name) for at, layers in events for name in layers]
    assert [(r["step"], r["layer"]) for r in rows] == [(at, n) for at, ls in events for n in ls]
    widths = {n: net.blocks[n][0].weight.shape[0] for n in masks.layers}
    assert {n: len(k) for n, k in masks.keep().items()} == {n: c // 2 for n, c in widths.items()}
    # μ of a layer set at step t averages the activations since the previous mask change
    assert all(any(v > 0 for v in r["act_l1"]) for r in rows)


def test_masked_network_equals_the_physically_pruned_one(ctx):
    net = copy.deepcopy(ctx.float_model).eval()
    masks = ChannelMasks(net, "act_l1")
    for name in masks.layers:
        masks.set_mask(name, 0.5, torch.rand(net.blocks[name][0].weight.shape[0]).tolist())
    x = ctx.data.x_test[:32]
    masked = predict(net, x)
    masks.remove()
    plan = ctx.arch.uniform_plan(4, 4, 5)
    for name, keep in masks.keep().items():
        plan = plan.with_layer(name, keep=keep)
    pruned = transfer_weights(net, None, build_float(ctx.arch, ctx.data.pixel_max, plan), plan)
    torch.testing.assert_close(predict(pruned, x), masked, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_reaches_the_sparsity(ctx, schedule):
    p = QsparseParams(name="qsparse", epochs=2, report=False, sparsity=0.75)
    r = run_schedule(ctx, p, schedule, 0.75)
    for spec in ctx.arch.layers[:-1]:
        lp = r.plan.layers[spec.name]
        assert len(lp.keep) == spec.out // 4 and lp.quantizer == "moving_average"
    assert r.plan.layers["fc1"].keep is None
    assert r.model.blocks["conv2"][0].weight.shape[:2] == (8, 4)
    assert len(r.events) == {"layerwise_a": 4, "layerwise_w": 4, "stepwise": 16}.get(schedule, 0)


# ----------------------------------------------------------------------------- Table 4


def table_row(schedule: str, sparsity: float, acc: float) -> QsparseRow:
    return QsparseRow(method=f"{schedule} {sparsity}", schedule=schedule, sparsity=sparsity,
                      weight_bits=4, act_bits=4, weight_sparsity=sparsity, act_sparsity=sparsity,
                      float_test_accuracy=0.98, test_accuracy=acc,
                      accuracy_diff_points=100 * (acc - 0.98), weight_mbit=0.1, act_mbit=0.01,
                      performance_density_percent_per_mbit=100 * acc / 0.11, finn=None,
                      prune_s=None, qat_s=None)


def test_claim_checks_compare_layerwise_a_at_one_sparsity():
    rows = [table_row("layerwise_a", 0.75, 0.95), table_row("one_shot", 0.75, 0.95),
            table_row("stepwise", 0.75, 0.96), table_row("layerwise_w", 0.5, 0.99)]
    assert claim_checks(rows, 0.75) == {"layerwise_a >= one_shot at 75%": True,
                                        "layerwise_a >= stepwise at 75%": False}
    assert claim_checks(rows, 0.5) == {}  # no layerwise (A) row at 50 %


def test_rank_agreement_of_each_layerwise_a_mask_step():
    events = [{"layer": "conv1", "unit": "conv1", "step": 3, "act_l1": [3.0, 2.0, 1.0],
               "weight_l1": [1.0, 2.0, 3.0]}]
    results = [ScheduleResult("layerwise_a", 0.5, None, None, 1.0, events),
               ScheduleResult("layerwise_w", 0.5, None, None, 1.0, events)]
    assert rank_agreement(results) == [RankAgreement(sparsity=0.5, layer="conv1", step=3, n=3,
                                                     tau=-1.0, lev=2, lev_norm=2 / 3)]


@pytest.mark.slow
def test_report_writes_table_4_and_reads_it_back(ctx, tmp_path):
    p = QsparseParams(name="qsparse", epochs=1, report=False, report_sparsities=[0.5])
    result = run_schedule(ctx, p, "layerwise_a", 0.5)
    table = run_report(ctx, p, [result], tmp_path)
    assert QsparseTable.model_validate_json((tmp_path / "qsparse_table.json").read_text()) == table
    assert [r.method for r in table.rows] == ["Float baseline", "Dense W4A4", "Layerwise (A) 50%"]
    float_row, dense, pruned = table.rows
    assert float_row.finn is None and dense.finn.lut_finn_estimate > 0
    assert pruned.finn.fps_finn_estimate > 0 and pruned.prune_s is not None
    assert float_row.weight_mbit == pytest.approx(32 * 47376 / 1e6)
    assert dense.weight_mbit == pytest.approx(4 * 47376 / 1e6)
    assert pruned.weight_sparsity > 0.5 and dense.weight_sparsity == 0
    assert table.chosen == "Layerwise (A) 50%" and table.checks == {}
    assert len(table.rank_agreement) == len(result.events) == 4
    with (tmp_path / "qsparse_table.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == [r.method for r in table.rows]
    assert rows[0]["lut_finn_estimate"] == "" and float(rows[1]["lut_finn_estimate"]) > 0
    assert (tmp_path / "qsparse_tradeoff.png").stat().st_size > 10_000


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.rtlsim
def test_recipe_builds_and_simulates_bit_exactly(bit_exact_run):
    plan = bit_exact_run({
        "name": "qsparse_tiny", "data": {"dataset": "digits", "limit": 300},
        "train": {"epochs": 3}, "qat": {"epochs": 2},
        "method": {"name": "qsparse", "sparsity": 0.5, "epochs": 2, "report": False,
                   "weight_bits": 3, "act_bits": 3},
        "hardware": {"board": "pynq-z1", "target_fps": 50000}, "simulate": {"frames": 20},
    })
    conv2 = plan.layers["conv2"]
    assert conv2.quantizer == "moving_average" and len(conv2.keep) == 16
