"""SCRUB (Kurmanji et al., 2023): a student moves away from the original on the forget set, stays on retain.

Teacher = frozen copy of the original in eval mode; student = the model being unlearned, in train mode
(so its BatchNorm statistics also see forget batches, as in both reference codebases). Per epoch e (0-based):
if e < max_steps, one pass over the forget set maximizing KL_T(teacher ‖ student) (loss = −KL); then one pass
over the retain set minimizing γ·CE(student, y) + α·KL_T(teacher ‖ student). KL is RepDistiller's DistillKL:
temperature T, times T², averaged per example. One SGD optimizer over the student serves both passes.

Exactly `max_steps` epochs contain a max pass, as in the SCRUB repository's notebooks and the paper's
Algorithm 1. The RUM code behind the paper's numbers runs one more (its condition `e <= msteps`, 0-based e), so
the paper's "max steps 4" row ran 5 passes: the default below and the paper points of `search_spaces` carry
Table C.2's value + 1, so that "paper" means what the paper ran.
Names follow the paper: α weighs the KL term, γ the cross-entropy (RUM calls the KL weight `beta`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .errors import ConfigError
from .training import kl_to_teacher
from .unlearning import ALGORITHMS, Unlearner, check_positive

TEACHER_BATCH = 1024  # examples per forward of the teacher's one pass over a set (eval mode, no graph)


@dataclass(frozen=True)
class ScrubConfig:
    """SCRUB hyperparameters; defaults are the paper's CIFAR-10 ResNet-18 row of Table C.2 as the paper ran it."""

    lr: float = 0.01              # unlearning learning rate (Table C.2)
    epochs: int = 10              # total epochs (Table C.2)
    max_steps: int = 5            # epochs that start with a forget-set max pass; <= epochs (Table C.2: 4, +1 run)
    alpha: float = 0.9            # weight of KL_T(teacher ‖ student) on retain batches
    gamma: float = 0.9            # weight of the retain cross-entropy
    temperature: float = 4.0      # distillation temperature T (both reference codebases: 4)
    forget_batch_size: int = 256  # RUM: one --batch_size for both loaders
    retain_batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = False         # crop/flip during unlearning (RUM's pipelines pass --no_aug)

    def __post_init__(self):
        check_positive("lr", self.lr)
        check_positive("epochs", self.epochs, allow_zero=True)
        check_positive("max_steps", self.max_steps, allow_zero=True)
        if self.max_steps > self.epochs:
            raise ConfigError(f"max_steps <= epochs must hold, got max_steps={self.max_steps}, epochs={self.epochs}")
        check_positive("alpha", self.alpha, allow_zero=True)
        check_positive("gamma", self.gamma, allow_zero=True)
        check_positive("temperature", self.temperature)
        check_positive("forget_batch_size", self.forget_batch_size)
        check_positive("retain_batch_size", self.retain_batch_size)
        check_positive("momentum", self.momentum, allow_zero=True)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)


@ALGORITHMS.register("scrub")
class Scrub(Unlearner):
    Config = ScrubConfig

    def __init__(self, model, forget, retain, cfg: ScrubConfig, **kw):
        super().__init__(model, forget, retain, cfg, **kw)
        self.teacher = copy.deepcopy(model).eval().requires_grad_(False)
        self._teacher_cache: dict = {}  # "forget" / "retain" -> (sorted ids, their positions, logits)

    def state_dict(self) -> dict:
        # The teacher is the model this request started from: a resumed run rebuilds the unlearner around some
        # model, so the teacher travels with the checkpoint.
        return {**super().state_dict(), "teacher": self.teacher.state_dict()}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.teacher.load_state_dict(state["teacher"])
        self._teacher_cache.clear()

    @property
    def settled(self) -> bool:
        """Past the max phase (one min-only epoch after the last max pass), or done: before that SCRUB is
        mid-way through forgetting and its metrics say nothing about where it ends up."""
        return self.epoch > self.cfg.max_steps or self.epoch >= self.epochs

    def _teacher_logits(self, x: torch.Tensor, ids: torch.Tensor, which: str) -> torch.Tensor:
        """The frozen teacher's logits for a batch of the forget or retain set. Without augmentation an example's
        input never changes, so they come from one eval pass over the set, looked up by id: every later epoch
        skips the teacher's forward (the same values: eval mode makes them independent of the batch)."""
        if self.pad or self.flip:
            with torch.no_grad(), self.numerics.autocast():
                return self.teacher(x)
        if which not in self._teacher_cache:
            data = self.forget if which == "forget" else self.retain
            with torch.no_grad(), self.numerics.autocast():
                logits = torch.cat([self.teacher(data.numerics.input(data.x[i:i + TEACHER_BATCH]))
                                    for i in range(0, len(data), TEACHER_BATCH)])
            order = torch.argsort(data.ids)
            self._teacher_cache[which] = (data.ids[order], order, logits)
        sorted_ids, order, logits = self._teacher_cache[which]
        return logits[order[torch.searchsorted(sorted_ids, ids)]]

    def run_epoch(self, epoch: int) -> dict:
        cfg, T = self.cfg, self.cfg.temperature
        self.model.train()
        stats = {}
        if epoch < cfg.max_steps and len(self.forget):
            worst = torch.zeros((), device=self.device)
            total, steps = torch.zeros((), device=self.device), 0
            for x, _, ids in self.forget_batches(cfg.forget_batch_size):
                with self.numerics.autocast():
                    s = self.model(x)
                kl = kl_to_teacher(s, self._teacher_logits(x, ids, "forget"), T)
                self.sgd_step(-kl)
                worst = torch.maximum(worst, kl.detach().abs())
                total += kl.detach()
                steps += 1
                self.guard(worst, steps, epoch, "forget KL")
            self.guard(worst, 0, epoch, "forget KL", force=True)
            stats["forget_kl"] = (total / max(steps, 1)).item()
        worst = torch.zeros((), device=self.device)
        total, steps = torch.zeros((), device=self.device), 0
        for x, y, ids in self.retain_batches(cfg.retain_batch_size):
            with self.numerics.autocast():
                s = self.model(x)
            loss = cfg.gamma * torch.nn.functional.cross_entropy(s.float(), y)
            if cfg.alpha:
                loss = loss + cfg.alpha * kl_to_teacher(s, self._teacher_logits(x, ids, "retain"), T)
            self.sgd_step(loss)
            worst = torch.maximum(worst, loss.detach().abs())
            total += loss.detach()
            steps += 1
            self.guard(worst, steps, epoch, "retain loss")
        self.guard(worst, 0, epoch, "retain loss", force=True)
        stats["retain_loss"] = (total / max(steps, 1)).item()
        return stats
