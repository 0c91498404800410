"""Channel importance of every hidden layer: activation l1 (data-driven) and weight l1 (data-free).

- activation l1 (qsparse's nonparametric measure): for channel c of layer l, the mean over a
  calibration set of the l1 norm of the channel's output feature map, taken after the block's
  ReLU (a forward hook on `model.blocks[l]`): mean_n sum_{h,w} |a_{n,c,h,w}|.
- weight l1: sum of |W| over each output channel's weights (data-free).

The classifier keeps all its outputs and is never scored here.
"""
from __future__ import annotations

import torch

from flow.models import Net


def hidden_layers(model: Net) -> list[str]:
    """Names of the layers whose output channels can be pruned (all but the classifier)."""
    return [spec.name for spec in model.arch.layers[:-1]]


@torch.no_grad()
def activation_l1(model: Net, x: torch.Tensor, batch_size: int = 256) -> dict[str, list[float]]:
    """Mean per-sample l1 norm of each output channel's activations after ReLU, per hidden layer."""
    names = hidden_layers(model)
    sums = {name: None for name in names}
    hooks = []

    def make_hook(name):
        def hook(_module, _inputs, output):
            out = output.value if hasattr(output, "value") else output  # QuantTensor -> tensor
            per_sample = out.abs().flatten(2).sum(2) if out.dim() > 2 else out.abs()  # (N, C)
            total = per_sample.sum(0)
            sums[name] = total if sums[name] is None else sums[name] + total
        return hook

    for name in names:
        hooks.append(model.blocks[name].register_forward_hook(make_hook(name)))
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {name: (sums[name] / len(x)).tolist() for name in names}


@torch.no_grad()
def weight_l1(model: Net) -> dict[str, list[float]]:
    """Sum of |w| over each output channel's weights, per hidden layer."""
    return {
        name: model.blocks[name][0].weight.detach().abs().flatten(1).sum(1).tolist()
        for name in hidden_layers(model)
    }


def channel_importance(model: Net, x: torch.Tensor) -> dict[str, dict[str, list[float]]]:
    """Both measures: {"act_l1": {layer: [...]}, "weight_l1": {layer: [...]}}."""
    return {"act_l1": activation_l1(model, x), "weight_l1": weight_l1(model)}
