"""Plan metrics against qonnx's inference_cost on the exported QONNX graph, and closed forms."""
import numpy as np
import pytest
import torch
from qonnx.util.inference_cost import inference_cost

from flow.ml.export import export_model
from flow.ml.metrics import performance_density, plan_metrics
from flow.models import build_float, build_quant, calibrate, get_architecture, transfer_weights

ARCH = get_architecture("digits_cnn")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    plan = (ARCH.uniform_plan(4, 3, 5).with_layer("conv2", keep=(0, 3, 5, 7, 9))
            .with_layer("conv4", weight_bits=2, keep=tuple(range(40)))
            .with_layer("fc1", weight_bits=6))
    torch.manual_seed(0)
    model = build_quant(ARCH, 16, plan)
    transfer_weights(build_float(ARCH, 16), None, model, plan)
    calibrate(model, [torch.randint(0, 17, (64, 1, 8, 8)).float()])
    qmodel = export_model(model, (1, 8, 8), 5, tmp_path_factory.mktemp("m") / "m.onnx")
    return plan, model, qmodel


def test_weights_macs_and_outputs_match_inference_cost(exported):
    plan, model, qmodel = exported
    cost = inference_cost(qmodel, discount_sparsity=False)["total_cost"]
    totals = plan_metrics(ARCH, plan, model).totals
    assert cost["total_mem_w_elems"] == totals.params
    assert cost["total_mem_w_bits"] == pytest.approx(1e6 * totals.weight_mbit)
    assert cost["total_macs"] == totals.macs
    assert cost["total_mem_o_elems"] == 16 * 64 + 5 * 36 + 32 * 16 + 40 + 10  # closed form


def test_pruned_zeros_match_inference_cost_sparsity(exported):
    plan, model, _ = exported
    with torch.no_grad():
        w = model.blocks["conv3"][0].weight
        w[w.abs() < w.abs().median()] = 0.0
    metrics = plan_metrics(ARCH, plan, model)
    row = next(r for r in metrics.layers if r.layer == "conv3")
    assert row.nonzero == int(torch.count_nonzero(w))
    # AQP's b̄ = Σ b(l)·S(l)·N_P(l), N_P over the FULL architecture's parameters
    full = {g.name: g.params for g in ARCH.geometry()}
    expected = sum(r.weight_bits * r.nonzero for r in metrics.layers) / sum(full.values())
    assert metrics.totals.avg_bits == pytest.approx(expected)
    assert metrics.totals.compression_ratio == pytest.approx(32 / expected)


def test_uniform_full_plan_closed_form():
    plan = ARCH.uniform_plan(4, 4, 5)
    t = plan_metrics(ARCH, plan).totals
    params = 144 + 4608 + 9216 + 32768 + 640
    assert t.params == params and t.avg_bits == pytest.approx(4.0)
    acts = 64 * 5 + (16 * 64 + 32 * 36 + 32 * 16 + 64) * 4  # input + hidden outputs
    assert t.act_mbit == pytest.approx(acts / 1e6)
    assert t.total_mbit == pytest.approx((params * 4 + acts) / 1e6)
    assert performance_density(0.98, t.total_mbit) == pytest.approx(98 / t.total_mbit)


def test_integer_tie_agrees_whichever_class_float_rounding_favours():
    """The digits search plan's frame 116: integer logits tie at 11 (classes 1 and 6), the
    hardware takes class 1, PyTorch's float32 logits favour class 6 by one rounding step."""
    from flow.ml.agreement import agrees

    logits = np.array([[-0.62505704, 3.4378135, -3.1252854, -2.1876996, -0.9375856, -2.1876996,
                        3.4378138, -3.4378138, 0.31252852, -3.7503424],
                       [0.1, 0.2, 0.3, 0, 0, 0, 0, 0, 0, 0]], dtype=np.float32)
    assert agrees(np.array([1, 2]), logits).tolist() == [True, True]
    assert agrees(np.array([6, 1]), logits).tolist() == [True, False]  # 0.2 < 0.3: no tie
    assert not agrees(np.array([8]), logits[:1]).any()
