"""SalUn (Fan et al., 2024): Random Label training of only the weights most salient for the forget set.

Saliency mask (the SalUn authors' current code): in eval mode, sum over forget batches (batch size
`batch_size`, no step) the gradient of the cross-entropy with the true labels, take |·| once, and keep the
`int(N · ratio)` largest entries of the concatenation of *all* parameters (global, not per layer); computed
once per request on the model being unlearned (in RUM: the stage's starting model). Unlearning is then Random
Label (`random_label.py`) in which the other coordinates are truly frozen: their gradients are zeroed, and after
every SGD step they are restored to their starting values and their momentum is zeroed, so neither weight
decay nor momentum moves them. Random Label is SalUn with an all-ones mask (`ratio = 1`).

    cfg = make_config("salun", {"lr": 0.013, "epochs": 10, "ratio": 0.5})   # SalUn README, CIFAR-10 R18
    unl = SalUn(model, forget, retain, cfg, seed=0, num_classes=10)
    unl.run()
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .batching import DeviceData
from .errors import ConfigError
from .random_label import RandomLabel, RandomLabelConfig
from .unlearning import ALGORITHMS


@dataclass(frozen=True)
class SalUnConfig(RandomLabelConfig):
    """SalUn hyperparameters; defaults are the SalUn README's (CIFAR-10 ResNet-18: 10 epochs, lr 0.013, ratio 0.5)."""

    lr: float = 0.013
    epochs: int = 10
    ratio: float = 0.5   # share of all parameter entries trained (the mask's ones), in (0, 1]

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.ratio <= 1.0:
            raise ConfigError(f"0 < ratio <= 1 must hold, got ratio={self.ratio}")


def saliency_mask(model: nn.Module, forget: DeviceData, ratio: float, batch_size: int) -> dict[str, torch.Tensor]:
    """Per parameter name, a bool tensor of its shape: True on the `int(N · ratio)` entries of largest
    |∑_batches ∇ CE(model(x), y)| over all N parameter entries of `model` (eval mode, the forget set in order).

    The model's weights, BatchNorm statistics and train/eval mode are left as they were; its gradients are cleared.
    """
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    for x, y, _ in forget.batches(batch_size, None, shuffle=False):
        with forget.numerics.autocast():
            logits = model(x)
        F.cross_entropy(logits.float(), y).backward()  # .grad sums the batches' gradients, as the reference
    params = list(model.named_parameters())
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in params]
    flat = torch.cat([g.detach().abs().flatten().float() for g in grads])
    keep = torch.zeros(len(flat), dtype=torch.bool, device=flat.device)
    keep[torch.topk(flat, int(len(flat) * ratio), sorted=False).indices] = True
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {name: m.view_as(p) for (name, p), m in zip(params, keep.split([p.numel() for _, p in params]))}


@ALGORITHMS.register("salun")
class SalUn(RandomLabel):
    Config = SalUnConfig

    def __init__(self, model, forget, retain, cfg: SalUnConfig, **kw):
        super().__init__(model, forget, retain, cfg, **kw)
        # Made at the first epoch, from the model as it is then (a resumed run loads it from its state instead).
        self.mask: Optional[dict[str, torch.Tensor]] = None
        self.start: dict[str, torch.Tensor] = {}
        self._frozen: list = []  # (parameter, its mask, its starting value) where some entry is frozen

    def _freeze(self, mask: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> None:
        named = dict(self.model.named_parameters())
        self.mask = {k: m.to(named[k].device) for k, m in mask.items()}
        self.start = {k: v.to(named[k].device) for k, v in start.items()}
        self._frozen = [(named[k], self.mask[k], self.start[k]) for k in self.start]

    def _make_mask(self) -> None:
        if self.cfg.ratio >= 1.0 or not len(self.forget):  # all ones (nothing ranks an empty forget set)
            self._freeze({k: torch.ones_like(p, dtype=torch.bool) for k, p in self.model.named_parameters()}, {})
            return
        mask = saliency_mask(self.model, self.forget, self.cfg.ratio, self.cfg.batch_size)
        start = {k: p.detach().clone() for k, p in self.model.named_parameters() if not bool(mask[k].all())}
        self._freeze(mask, start)

    def run_epoch(self, epoch: int) -> dict:
        if self.mask is None:
            self._make_mask()
        return super().run_epoch(epoch)

    def sgd_step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        for p, m, _ in self._frozen:
            if p.grad is not None:
                p.grad.masked_fill_(~m, 0.0)
        self.opt.step()
        with torch.no_grad():  # SGD adds weight decay and momentum after the gradient: undo them on frozen entries
            for p, m, p0 in self._frozen:
                p.copy_(torch.where(m, p, p0))
                buf = self.opt.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    buf.masked_fill_(~m, 0.0)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "mask": self.mask, "start": self.start}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        if state["mask"] is None:
            self.mask, self.start, self._frozen = None, {}, []
        else:
            self._freeze(dict(state["mask"]), dict(state["start"]))
