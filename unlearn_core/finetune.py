"""Fine-tuning on the retain set only: the simplest unlearning baseline and one of RUM's ingredients."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .unlearning import ALGORITHMS, Unlearner, check_positive


@dataclass(frozen=True)
class FinetuneConfig:
    """Plain training on the retain set at a constant learning rate (RUM:main_rum.py: 10 epochs, lr 0.1)."""

    lr: float = 0.1
    epochs: int = 10
    retain_batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = False

    def __post_init__(self):
        check_positive("lr", self.lr)
        check_positive("epochs", self.epochs, allow_zero=True)
        check_positive("retain_batch_size", self.retain_batch_size)
        check_positive("momentum", self.momentum, allow_zero=True)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)


@ALGORITHMS.register("finetune")
class Finetune(Unlearner):
    Config = FinetuneConfig

    def run_epoch(self, epoch: int) -> dict:
        self.model.train()
        worst = torch.zeros((), device=self.device)
        total, steps = torch.zeros((), device=self.device), 0
        for x, y, _ in self.retain_batches(self.cfg.retain_batch_size):
            loss = self.forward_ce(x, y)
            self.sgd_step(loss)
            worst = torch.maximum(worst, loss.detach().abs())
            total += loss.detach()
            steps += 1
            self.guard(worst, steps, epoch, "retain loss")
        self.guard(worst, 0, epoch, "retain loss", force=True)
        return {"loss": (total / max(steps, 1)).item()}
