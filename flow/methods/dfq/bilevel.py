"""DFQ ("Differentiable Fine-grained Quantization for Deep Neural Network Compression"):
differentiable per-layer weight bit-widths (softmax relaxation, bi-level search).

Relaxation (Eq. 1, flow.models.quantizers.BitMixture): every layer i holds one float weight w_i,
a BatchNorm per candidate bit-width b_j (the classifier, which has no BatchNorm, mixes its
branches directly) and logits α_i; its output is q_i = Σ_j softmax(α_i)_j · B_j(layer(x; Q_bj(w))).
Hidden activations (and every residual add's shared quantizer) are quantized to `act_bits`
(Brevitas, as in the discrete network), the input to the data's bits. The supernet starts from
the trained float network (weights, and its BatchNorm in every branch) with α = 0, and its
activation scales are calibrated first.

Algorithm 1, per training batch (first-order, as DARTS [9] which the paper adopts):
1. w descends ∇_w L_train(w, α) (Adam with the recipe's QAT learning rate, cosine decay);
2. on the next validation batch, λ = 0 if L_val(w, α) - θ <= 0, else λ = Λ (`lambda_inf`, 100:
   "∞" as a large finite constant; G is normalised to 1, so Λ·(L_val - θ) dominates whenever
   the constraint is violated by more than ~0.01 nats);
3. α descends ∇_α (G(α) + λ (L_val(w, α) - θ)) (Adam, `alpha_lr`).
The validation loss is taken in eval mode (BatchNorm running statistics, frozen quantizer
scales), so the α step measures the network as deployed and leaves its statistics alone.
θ, the paper's "expected maximum loss", is L_val(float network) + `theta_margin`.

Costs G(α) = Σ_i Σ_j softmax(α_i)_j · c_i(b_j) (`cost` in the recipe), each normalised so the
network at the largest candidate everywhere costs 1:
- "size" (the paper's expected model size): c_i(b) = b · N_i, N_i the layer's weight count;
- "hardware" (ours): c_i(b) = LUT_i(b)/LUT + BRAM18_i(b)/BRAM18 + DSP_i(b)/DSP of the board
  (recipe.hardware), from hw_models.cost (calibrated to FINN's estimate) for layer i's RTL MVAU at
  b-bit weights (HLS below FINN's 2-bit RTL minimum; a depthwise layer's VVAU, PE over its
  channels) and its thresholds, folded for the target frame rate by flow.finn.folding's
  mvau_folding (fewest lanes meeting clock / target_fps cycles per frame; thresholds at the
  MVAU's PE), the accumulator at its worst-case width for b.
Discretisation: b_i = argmax_j α_ij. The method returns the discrete Brevitas network holding the
supernet's weights and the chosen branch's BatchNorm, calibrated: the qat step fine-tunes it
("we retrain the quantization and fine tune the quantized weights"), starting from weights that
were trained with the low-bit branches in the loop rather than from the float network.
With `report: true` both costs are searched and flow.methods.dfq.report writes Table 1 and
Figure 2.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import torch
from brevitas.nn import QuantIdentity
from brevitas.quant import Uint8ActPerTensorFloat
from torch import nn

from flow.core.errors import DensiflowError
from flow.methods.base import MethodContext
from flow.methods.params import DfqParams
from flow.ml.train import mean_loss
from flow.models import Net, build_float, calibrate, graph_ops
from flow.models.build import activation
from flow.models.ptq import CALIB_SAMPLES
from flow.models.quantizers import BitMixture, expected_cost
from flow.recipe.plan import CompressionPlan
from hw_models.rules import MIN_RTL_BITS, input_bits

log = logging.getLogger(__name__)

COSTS = ("size", "hardware")


def lagrange_lambda(val_loss: float, theta: float, lambda_inf: float) -> float:
    """Algorithm 1's λ: 0 while L_val - θ <= 0, else "∞" (lambda_inf)."""
    return 0.0 if val_loss - theta <= 0 else lambda_inf


# ----------------------------------------------------------------------------- costs c_i(b_j)


def _normalised(costs: list[list[float]]) -> list[list[float]]:
    """Divide by the cost of the network at the largest candidate everywhere."""
    top = sum(layer[-1] for layer in costs)
    return [[c / top for c in layer] for layer in costs]


def size_costs(ctx: MethodContext, candidates: list[int]) -> list[list[float]]:
    """c_i(b) = b · N_i (weight bits of layer i), normalised."""
    return _normalised([[b * g.params for b in candidates] for g in ctx.arch.geometry()])


def hardware_costs(ctx: MethodContext, candidates: list[int], act_bits: int) -> list[list[float]]:
    """c_i(b) = LUT/LUT + BRAM18/BRAM18 + DSP/DSP of the board for layer i's MVAU at b-bit
    weights and its thresholds (hw_models.cost), folded for the target frame rate; normalised."""
    from flow.finn.folding import mvau_folding
    from hw_models.boards import get_board
    from hw_models.cost import MvauLayer, ThresholdingLayer, VvauLayer, acc_bits_bound, estimate
    from hw_models.rules import divisors

    if ctx.recipe is None:
        raise DensiflowError("method dfq: cost 'hardware' needs the recipe's hardware section")
    hw = ctx.recipe.hardware
    board = get_board(hw.board)
    cycles = math.floor((hw.clock_mhz or board.clock_mhz) * 1e6 / hw.target_fps)
    in_bits, costs = input_bits(ctx.data.input_bits), []
    geometry = ctx.arch.geometry()
    for g in geometry:
        mw, mh, vectors = g.in_ch // g.groups * g.kernel**2, g.out_ch, g.out_hw**2
        simd, pe = mvau_folding(mw, mh, vectors, cycles) if g.groups == 1 else (1, next(
            p for p in divisors(mh) if p == mh or (mh // p) * mw * vectors <= cycles))
        row = []
        for b in candidates:
            impl = "rtl" if b >= MIN_RTL_BITS else "hls"  # 1-bit weights: FINN's HLS MVAU
            if g.groups == 1:
                unit: MvauLayer | VvauLayer = MvauLayer(
                    mw=mw, mh=mh, simd=simd, pe=pe, vectors=vectors, weight_bits=b,
                    input_bits=in_bits, dsp_type=board.dsp_type, impl=impl)
            else:  # depthwise: a VVAU (hw_models.finn_ops.vvau: RTL on every part), PE over
                # its channels
                unit = VvauLayer(channels=mh, kernel=(g.kernel,) * 2, dim=(g.out_hw,) * 2, pe=pe,
                                 weight_bits=b, input_bits=in_bits, dsp_type=board.dsp_type,
                                 impl=impl)
            parts = [unit]
            if g is not geometry[-1]:
                parts.append(ThresholdingLayer(channels=mh, pe=pe, vectors=vectors,
                                               input_bits=acc_bits_bound(mw, b, in_bits, False),
                                               output_bits=act_bits))
            res = [estimate(x).resources for x in parts]
            row.append(sum(r.lut / board.lut + r.bram18 / board.bram18 + r.dsp / board.dsp
                           for r in res))
        costs.append(row)
        in_bits = act_bits
    return _normalised(costs)


# ----------------------------------------------------------------------------- the supernet


def supernet(ctx: MethodContext, candidates: list[int], act_bits: int) -> Net:
    """The relaxed network: BitMixture layers from the float network's weights and BatchNorm,
    each hidden layer's activation (and every add's shared quantizer) at `act_bits`."""
    plan = ctx.arch.uniform_plan(candidates[-1], act_bits, input_bits(ctx.data.input_bits))
    blocks = {}
    for spec in ctx.arch.layers:
        src = ctx.float_model.blocks[spec.name]
        last = spec is ctx.arch.layers[-1]
        mix = BitMixture(copy.deepcopy(src[0]), candidates, norm=not last)
        if not last:
            for norm in mix.norms:
                norm.load_state_dict(src[1].state_dict())
        acts = [] if spec.act is None else activation(spec.act, plan.layers[spec.name], True)
        blocks[spec.name] = nn.Sequential(mix, *acts)
    in_quant = QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=plan.input_bits)
    net = Net(ctx.arch, ctx.data.pixel_max, in_quant, blocks, graph_ops(ctx.arch, plan, True))
    calib_x, _ = ctx.data.subset("train", CALIB_SAMPLES, ctx.seed)
    return calibrate(net, [calib_x])


def mixtures(net: Net) -> list[BitMixture]:
    """The BitMixture of every layer, in order."""
    return [net.blocks[spec.name][0] for spec in net.arch.layers]


def discretise(ctx: MethodContext, net: Net, candidates: list[int],
               act_bits: int) -> CompressionPlan:
    """b_i = argmax_j α_ij for every layer."""
    plan = ctx.arch.uniform_plan(candidates[-1], act_bits, input_bits(ctx.data.input_bits))
    for spec, mix in zip(ctx.arch.layers, mixtures(net)):
        plan = plan.with_layer(spec.name, weight_bits=mix.candidates[mix.chosen()])
    return plan


def discrete_weights(ctx: MethodContext, net: Net) -> Net:
    """A float network holding the supernet's weights and each chosen branch's BatchNorm."""
    out = build_float(ctx.arch, ctx.data.pixel_max)
    with torch.no_grad():
        for spec, mix in zip(ctx.arch.layers, mixtures(net)):
            block = out.blocks[spec.name]
            block[0].weight.copy_(mix.layer.weight)
            if mix.norms is not None:
                block[1].load_state_dict(mix.norms[mix.chosen()].state_dict())
    return out.eval()


# ----------------------------------------------------------------------------- Algorithm 1


@dataclass
class BilevelResult:
    """One search: the discrete plan, the supernet, θ and the per-epoch trace."""

    cost: str
    plan: CompressionPlan
    net: Net
    theta: float
    seconds: float
    trace: list[dict] = field(default_factory=list)


def _alpha_step(net: Net, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                g_costs: list[list[float]], theta: float, lambda_inf: float) -> tuple[float, float]:
    """One α update on a validation batch; returns (L_val, λ)."""
    net.eval()
    opt.zero_grad()
    val_loss = nn.functional.cross_entropy(net(x), y)
    lam = lagrange_lambda(val_loss.item(), theta, lambda_inf)
    (expected_cost(mixtures(net), g_costs) + lam * (val_loss - theta)).backward()
    opt.step()
    net.train()
    return val_loss.item(), lam


def search(ctx: MethodContext, p: DfqParams, cost: str) -> BilevelResult:
    """Algorithm 1 with cost G = `cost`, then argmax discretisation."""
    t0 = time.perf_counter()
    g_costs = (size_costs(ctx, p.candidates) if cost == "size"
               else hardware_costs(ctx, p.candidates, p.act_bits))
    theta = mean_loss(ctx.float_model, ctx.data.x_val, ctx.data.y_val) + p.theta_margin
    torch.manual_seed(ctx.seed)
    net = supernet(ctx, p.candidates, p.act_bits)
    alphas = [m.alpha for m in mixtures(net)]
    weights = [q for q in net.parameters() if all(q is not a for a in alphas)]
    w_opt = torch.optim.Adam(weights, lr=ctx.qat.lr, weight_decay=ctx.qat.weight_decay)
    a_opt = torch.optim.SGD(alphas, lr=p.alpha_lr)
    d, bs = ctx.data, ctx.qat.batch_size
    per_epoch = -(-len(d.x_train) // bs)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, p.epochs * per_epoch)
    gen = torch.Generator().manual_seed(ctx.seed)
    trace, v = [], 0
    for epoch in range(p.epochs):
        net.train()
        order, val_order = torch.randperm(len(d.x_train), generator=gen), \
            torch.randperm(len(d.x_val), generator=gen)
        losses, lams = [], []
        for i in range(0, len(order), bs):
            idx = order[i : i + bs]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            w_opt.zero_grad()
            nn.functional.cross_entropy(net(d.x_train[idx]), d.y_train[idx]).backward()
            w_opt.step()
            sched.step()
            vidx = val_order[torch.arange(v, v + bs) % len(val_order)]
            v += bs
            if epoch >= p.warmup_epochs:
                loss, lam = _alpha_step(net, a_opt, d.x_val[vidx], d.y_val[vidx], g_costs,
                                        theta, p.lambda_inf)
                losses.append(loss)
                lams.append(lam)
        probs = [m.probabilities().tolist() for m in mixtures(net)]
        trace.append({"epoch": epoch + 1,
                      "val_loss": sum(losses) / len(losses) if losses else None,
                      "lambda_on": sum(lam > 0 for lam in lams) / len(lams) if lams else None,
                      "expected_cost": expected_cost(mixtures(net), g_costs).item(),
                      "probabilities": probs})
        log.debug("dfq %s epoch %d: %s", cost, epoch + 1, trace[-1])
    net.eval()
    plan = discretise(ctx, net, p.candidates, p.act_bits)
    return BilevelResult(cost, plan, net, theta, time.perf_counter() - t0, trace)
