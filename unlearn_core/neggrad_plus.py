"""NegGrad+ (Kurmanji et al., 2023): descend on the retain loss while ascending on the forget loss.

loss = β·CE(retain batch) − (1−β)·CE(forget batch). One epoch is one pass over the retain set; forget batches
are cycled (a new shuffle each epoch; within an epoch the cycle repeats the same batches in the same order,
as `itertools.cycle` does in both references). Retain and forget batches get separate forward passes in train
mode, so BatchNorm sees both. β = 1 is plain fine-tuning; β = 0 is pure NegGrad, which diverges.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ConfigError
from .unlearning import ALGORITHMS, Unlearner, check_positive


@dataclass(frozen=True)
class NegGradPlusConfig:
    """NegGrad+ hyperparameters; defaults are the paper's CIFAR-10 row of Table C.3."""

    lr: float = 0.01              # Table C.3
    epochs: int = 10              # Table C.3
    beta: float = 0.9             # retain weight β in [0, 1]; forget weight is 1 − β (Table C.3: 0.9 on CIFAR-10)
    forget_batch_size: int = 256
    retain_batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = False

    def __post_init__(self):
        check_positive("lr", self.lr)
        check_positive("epochs", self.epochs, allow_zero=True)
        if not 0.0 <= self.beta <= 1.0:
            raise ConfigError(f"0 <= beta <= 1 must hold, got beta={self.beta}")
        check_positive("forget_batch_size", self.forget_batch_size)
        check_positive("retain_batch_size", self.retain_batch_size)
        check_positive("momentum", self.momentum, allow_zero=True)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)


@ALGORITHMS.register("neggrad_plus")
class NegGradPlus(Unlearner):
    Config = NegGradPlusConfig

    def run_epoch(self, epoch: int) -> dict:
        cfg = self.cfg
        self.model.train()
        forget_cycle = list(self.forget_batches(cfg.forget_batch_size)) if len(self.forget) else []
        worst = torch.zeros((), device=self.device)
        total, forget_total, steps = torch.zeros((), device=self.device), torch.zeros((), device=self.device), 0
        for i, (x, y, _) in enumerate(self.retain_batches(cfg.retain_batch_size)):
            loss = cfg.beta * self.forward_ce(x, y)
            if forget_cycle:
                xf, yf, _ = forget_cycle[i % len(forget_cycle)]
                forget_term = (1.0 - cfg.beta) * self.forward_ce(xf, yf)
                loss = loss - forget_term
                worst = torch.maximum(worst, forget_term.detach().abs())
                forget_total += forget_term.detach()
            self.sgd_step(loss)
            worst = torch.maximum(worst, loss.detach().abs())
            total += loss.detach()
            steps += 1
            self.guard(worst, steps, epoch, "NegGrad+ loss")
        self.guard(worst, 0, epoch, "NegGrad+ loss", force=True)
        return {"loss": (total / max(steps, 1)).item(), "forget_term": (forget_total / max(steps, 1)).item()}
