"""What fixes one experiment's models and sets: `ExperimentSpec` (the unlearning hyperparameters are not in it).

The defaults that depend on the dataset (model width, forget-set size) live here too, so the CLI, the tuner
and the study resolve them the same way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from .errors import ConfigError
from .numerics import check_numerics

# Width-reduced models where full width is pointless (8×8 digits upsampled to 16×16) or too slow on a CPU.
DEFAULT_WIDTH = {"digits": 0.125}  # ResNet-18 still reaches ~99 % test accuracy on digits; a search fits in 3 min
# Forget-set size: the paper's 3,000 of CIFAR's 45,000 (6.7 %); digits scaled to about the same share.
DEFAULT_FORGET_SIZE = {"digits": 90}
FORGET_KINDS = ("random", "class", "mix")
RANKING_MODELS = ("current", "retrain")  # which model scores requests 2..k of a mix and RUM (see next_request)


def default_store() -> str:
    return os.environ.get("UNLEARN_STORE", os.path.join(os.path.expanduser("~"), ".cache", "unlearn", "artifacts"))


@dataclass(frozen=True)
class ExperimentSpec:
    """Everything that fixes the models and sets of one experiment (not the unlearning hyperparameters)."""

    dataset: str = "digits"
    arch: str = "resnet18"
    width: Optional[float] = None          # channel multiplier; None → DEFAULT_WIDTH or 1.0
    seed: int = 0                          # model seed: original, retrain, forget sets, unlearning
    split_seed: int = 1                    # train/val split seed (RUM always uses 1), separate from `seed`
    forget: str = "random"                 # random | class | mix (mix needs a memorization proxy)
    forget_size: Optional[int] = None      # None → DEFAULT_FORGET_SIZE or 3,000
    forget_classes: tuple[int, ...] = (0,)  # for forget="class"
    proxy: str = "confidence"              # memorization proxy for forget="mix" and RUM
    data_dir: Optional[str] = None
    store: Optional[str] = None            # artifact store root (folder or fsspec URI)
    device: Optional[str] = None
    train_epochs: Optional[int] = None     # override the recipe's epochs (tests, quick runs)
    precision: Optional[str] = None        # fp32 | bf16; None → the device's (bf16 on CUDA, fp32 on the CPU)
    memory_format: Optional[str] = None    # contiguous | channels_last; None → channels_last

    def __post_init__(self):
        if self.forget not in FORGET_KINDS:
            raise ConfigError(f"unknown forget kind {self.forget!r}; valid: {', '.join(FORGET_KINDS)}")
        if self.width is not None and not self.width > 0:
            raise ConfigError(f"width must be > 0, got width={self.width}")
        if self.forget_size is not None and self.forget_size < 1:
            raise ConfigError(f"forget_size must be >= 1, got forget_size={self.forget_size}")
        if self.train_epochs is not None and self.train_epochs < 1:
            raise ConfigError(f"train_epochs must be >= 1, got train_epochs={self.train_epochs}")
        check_numerics(self.precision, self.memory_format)
        object.__setattr__(self, "forget_classes", tuple(int(c) for c in self.forget_classes))

    @property
    def resolved_width(self) -> float:
        return self.width if self.width is not None else DEFAULT_WIDTH.get(self.dataset, 1.0)

    @property
    def resolved_forget_size(self) -> int:
        return self.forget_size or DEFAULT_FORGET_SIZE.get(self.dataset, 3000)
