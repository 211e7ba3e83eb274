"""NegGrad, gradient ascent: maximize the cross-entropy of the forget set (true labels), with no retain term.

One epoch is one pass over the forget set in train mode; each batch takes an SGD step on −CE. The loss grows
without bound, so the run is guarded as NegGrad+ is: a forget loss past `diverge_bound` (1e3; a sane CE is
~ln C) or not finite raises `LossDiverged`, and the run scores 0. The retain set is not trained on (it is
only scored). NegGrad+ (`neggrad_plus.py`) adds the retain term; NegGrad is its β = 0 end.

    cfg = make_config("neggrad", {"lr": 1e-4, "epochs": 5})   # the references' scripted config
    unl = NegGrad(model, forget, retain, cfg, seed=0)
    unl.run()
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .unlearning import ALGORITHMS, Unlearner, check_positive


@dataclass(frozen=True)
class NegGradConfig:
    """Gradient ascent hyperparameters; defaults are the scripted config of all three references
    (Unlearn-Sparse, SalUn before 2024-04, RUM READMEs: 5 epochs at lr 1e-4)."""

    lr: float = 1e-4
    epochs: int = 5
    forget_batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = False

    def __post_init__(self):
        check_positive("lr", self.lr)
        check_positive("epochs", self.epochs, allow_zero=True)
        check_positive("forget_batch_size", self.forget_batch_size)
        check_positive("momentum", self.momentum, allow_zero=True)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)


@ALGORITHMS.register("neggrad")
class NegGrad(Unlearner):
    Config = NegGradConfig

    def run_epoch(self, epoch: int) -> dict:
        self.model.train()
        worst = torch.zeros((), device=self.device)
        total, steps = torch.zeros((), device=self.device), 0
        for x, y, _ in self.forget_batches(self.cfg.forget_batch_size):
            ce = self.forward_ce(x, y)
            self.sgd_step(-ce)
            worst = torch.maximum(worst, ce.detach().abs())
            total += ce.detach()
            steps += 1
            self.guard(worst, steps, epoch, "forget loss")
        self.guard(worst, 0, epoch, "forget loss", force=True)
        return {"forget_loss": (total / max(steps, 1)).item()}
