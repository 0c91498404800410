"""Seeded CPU training (float baseline and QAT fine-tuning) and evaluation."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings of one training phase."""

    epochs: int
    lr: float = 2e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    seed: int = 0


def train_steps(n: int, cfg: TrainConfig) -> int:
    """Optimisation steps of `train` over n samples (batches of one sample are skipped)."""
    return cfg.epochs * sum(1 for i in range(0, n, cfg.batch_size) if n - i >= 2)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
          label: str = "train", x_val: torch.Tensor | None = None,
          y_val: torch.Tensor | None = None, before_step: Callable[[int], None] | None = None,
          best_after_step: int = 0) -> nn.Module:
    """Adam with cosine decay over the data, seeded; keeps the weights of the best val epoch
    (among the epochs ending after step `best_after_step`). `before_step(step)` is called
    before each optimisation step (e.g. to set pruning masks on a schedule)."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(x) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    best_acc, best_state, step = -1.0, None, 0
    with _progress() as bar:
        task = bar.add_task(label, total=cfg.epochs, status="")
        for epoch in range(cfg.epochs):
            model.train()
            order = torch.randperm(len(x), generator=gen)
            total = 0.0
            for i in range(0, len(x), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                if before_step is not None:
                    before_step(step)
                opt.zero_grad()
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                total += loss.item() * len(idx)
            status = f"loss {total / len(x):.4f}"
            if x_val is not None and step > best_after_step:
                acc = accuracy(model, x_val, y_val)
                status += f"  val {acc:.2%}"
                if acc > best_acc:
                    best_acc = acc
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            bar.update(task, advance=1, status=status)
            log.debug("%s epoch %d: %s", label, epoch + 1, status)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of the model in eval mode."""
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    return (predict(model, x).argmax(1) == y).float().mean().item()


@torch.no_grad()
def mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cross-entropy over the set."""
    return nn.functional.cross_entropy(predict(model, x), y).item()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:>12}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} epochs"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        transient=False,
    )
