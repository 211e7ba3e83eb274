"""l1-sparse (Jia et al., 2023): fine-tune on the retain set with an l1 penalty on the weights that fades out.

Epoch e (0-based) of E minimizes the mean retain cross-entropy + α_e·‖θ‖₁ with α_e = α·(1 − e/E): α in the
first epoch, α/E in the last (Unlearn-Sparse and SalUn, `FT_iter(with_l1=True)`). ‖θ‖₁ is the plain sum of |w|
over every parameter entry, biases and BatchNorm included, not scaled by the number of entries, so α is small
(1e-4 for ResNet-18). α = 0 is plain fine-tuning. The forget set is not used.

    cfg = make_config("l1_sparse", {"lr": 0.01, "epochs": 10, "alpha": 1e-4})
    unl = L1Sparse(model, forget, retain, cfg, seed=0)
    unl.run()
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .unlearning import ALGORITHMS, Unlearner, check_positive


@dataclass(frozen=True)
class L1SparseConfig:
    """l1-sparse hyperparameters; lr and epochs are the references' scripted ones (Unlearn-Sparse README: 10
    epochs at lr 0.01), α the value third-party scripts use (the references leave it to the user)."""

    lr: float = 0.01
    epochs: int = 10
    alpha: float = 1e-4           # weight of ‖θ‖₁ in the first epoch; fades linearly to α/E
    retain_batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = False

    def __post_init__(self):
        check_positive("lr", self.lr)
        check_positive("epochs", self.epochs, allow_zero=True)
        check_positive("alpha", self.alpha, allow_zero=True)
        check_positive("retain_batch_size", self.retain_batch_size)
        check_positive("momentum", self.momentum, allow_zero=True)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)


def l1_weight(alpha: float, epoch: int, epochs: int) -> float:
    """α_e = α·(1 − e/E) for the 0-based epoch e of E (the references' linear decay, no l1-free tail)."""
    return alpha * (1.0 - epoch / epochs)


@ALGORITHMS.register("l1_sparse")
class L1Sparse(Unlearner):
    Config = L1SparseConfig

    def run_epoch(self, epoch: int) -> dict:
        weight = l1_weight(self.cfg.alpha, epoch, self.cfg.epochs)
        params = list(self.model.parameters())
        self.model.train()
        worst = torch.zeros((), device=self.device)
        total, steps = torch.zeros((), device=self.device), 0
        for x, y, _ in self.retain_batches(self.cfg.retain_batch_size):
            ce = self.forward_ce(x, y)
            loss = ce + weight * sum(p.abs().sum() for p in params) if weight else ce
            self.sgd_step(loss)
            worst = torch.maximum(worst, ce.detach().abs())  # the guard reads the CE: the l1 term scales with size
            total += loss.detach()
            steps += 1
            self.guard(worst, steps, epoch, "retain loss")
        self.guard(worst, 0, epoch, "retain loss", force=True)
        return {"loss": (total / max(steps, 1)).item(), "l1_weight": float(weight)}
