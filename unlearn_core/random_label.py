"""Random Label (a baseline of SalUn and RUM): train on the forget set relabelled at random, and on the retain set.

Each epoch every forget example gets a new label drawn uniformly from the dataset's classes (the true label not
excluded), and one shuffled pass over forget ∪ retain (retain with true labels) minimizes the cross-entropy,
in train mode, so BatchNorm sees both. This is the SalUn authors' loop for CIFAR-100 and TinyImageNet (their
CIFAR-10 loop until 2024-04) and RUM's for CIFAR-10, with one label per example per epoch; SalUn (`salun.py`)
is this loop with a saliency mask, and Random Label is SalUn with an all-ones mask.

The number of classes comes from the dataset (`for_request`: the workspace's data; built directly: the model's
`num_classes`, its head's width), never a constant: the references default to 10, so their CIFAR-100 runs
drew labels from 0-9 unless told otherwise. Labels come from the forget stream's seeded generator and the
batch order from the retain stream's, so a run is reproducible and resumes exactly from `state_dict()`.

    unl = RandomLabel(model, forget, retain, RandomLabelConfig(lr=0.1, epochs=10), seed=0, num_classes=10)
    unl.run()
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .batching import DeviceData
from .errors import ConfigError
from .unlearning import ALGORITHMS, Unlearner, check_positive


@dataclass(frozen=True)
class RandomLabelConfig:
    """Random Label hyperparameters; defaults are RUM's README row (RL_og, CIFAR-10 ResNet-18: 10 epochs, lr 0.1)."""

    lr: float = 0.1
    epochs: int = 10
    batch_size: int = 256         # one stream of relabelled forget ∪ retain (both references: 256)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = False

    def __post_init__(self):
        check_positive("lr", self.lr)
        check_positive("epochs", self.epochs, allow_zero=True)
        check_positive("batch_size", self.batch_size)
        check_positive("momentum", self.momentum, allow_zero=True)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)


@ALGORITHMS.register("random_label")
class RandomLabel(Unlearner):
    Config = RandomLabelConfig

    def __init__(self, model, forget: DeviceData, retain: DeviceData, cfg, *, num_classes: Optional[int] = None,
                 **kw):
        super().__init__(model, forget, retain, cfg, **kw)
        self.num_classes = int(num_classes if num_classes is not None else getattr(model, "num_classes", 0))
        if self.num_classes < 2:
            raise ConfigError(f"random labels need the dataset's number of classes (>= 2), got {self.num_classes}")
        # forget first, then retain: the first len(forget) positions are the ones relabelled each epoch
        self.joint = DeviceData(torch.cat([forget.x, retain.x]), torch.cat([forget.y, retain.y]),
                                torch.cat([forget.ids, retain.ids]), retain.numerics)
        self.forget_labels: Optional[torch.Tensor] = None  # the labels of the last epoch (for inspection)

    @classmethod
    def for_request(cls, model, request, cfg):
        forget, retain = request.ws.sets(request.forget_ids, *request.earlier)
        return cls(model, forget, retain, cfg, seed=request.seed, pad=request.ws.data.crop_pad,
                   flip=request.ws.data.flip, num_classes=request.ws.data.num_classes)

    def relabelled(self) -> DeviceData:
        """forget ∪ retain with a fresh uniform label for every forget example (draws from the forget stream)."""
        n = len(self.forget)
        labels = torch.randint(0, self.num_classes, (n,), device=self.device, generator=self.gen_forget)
        self.forget_labels = labels
        return DeviceData(self.joint.x, torch.cat([labels, self.joint.y[n:]]), self.joint.ids, self.numerics)

    def run_epoch(self, epoch: int) -> dict:
        self.model.train()
        worst = torch.zeros((), device=self.device)
        total, steps = torch.zeros((), device=self.device), 0
        for x, y, _ in self.relabelled().batches(self.cfg.batch_size, self.gen_retain, pad=self.pad, flip=self.flip):
            loss = self.forward_ce(x, y)
            self.sgd_step(loss)
            worst = torch.maximum(worst, loss.detach().abs())
            total += loss.detach()
            steps += 1
            self.guard(worst, steps, epoch, "loss")
        self.guard(worst, 0, epoch, "loss", force=True)
        return {"loss": (total / max(steps, 1)).item()}
