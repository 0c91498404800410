"""Post-training quantization of a plan: the plan's Brevitas network with the float weights."""
from __future__ import annotations

import torch

from flow.ml.data import Dataset
from flow.ml.train import TrainConfig, train
from flow.models.build import Net, build_quant, calibrate, transfer_weights
from flow.models.prune import apply_unstructured_pruning, make_pruning_permanent
from flow.models.zoo import Architecture
from flow.recipe.plan import CompressionPlan

CALIB_SAMPLES = 256  # train images that set the activation scales before fine-tuning


def ptq_model(arch: Architecture, start: Net, plan: CompressionPlan, calib_x: torch.Tensor,
              batch_size: int = 128, start_plan: CompressionPlan | None = None) -> Net:
    """The plan's Brevitas network with the weights of `start` (the float network, or a network
    already at `start_plan`'s channels), kept channels sliced out, unstructured masks applied,
    activation scales calibrated on `calib_x`: post-training quantization."""
    q = build_quant(arch, start.pixel_max, plan)
    transfer_weights(start, start_plan, q, plan)
    apply_unstructured_pruning(q, plan)
    calibrate(q, [calib_x[i : i + batch_size] for i in range(0, len(calib_x), batch_size)])
    return q


def qat_model(arch: Architecture, start: Net, plan: CompressionPlan, data: Dataset,
              cfg: TrainConfig, label: str = "qat",
              start_plan: CompressionPlan | None = None) -> Net:
    """The one QAT procedure (the qat step and every method's fine-tuned variants): PTQ model
    calibrated on the seeded calibration subset, fine-tuned on the train split (best val epoch),
    unstructured masks folded into plain weights."""
    calib_x, _ = data.subset("train", CALIB_SAMPLES, cfg.seed)
    model = ptq_model(arch, start, plan, calib_x, start_plan=start_plan)
    train(model, data.x_train, data.y_train, cfg, label, data.x_val, data.y_val)
    return make_pruning_permanent(model)
