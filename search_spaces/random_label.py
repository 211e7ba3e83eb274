"""The Random Label space: learning rate and length of training on randomly relabelled forget ∪ retain.

What it searches (2 dimensions; batch 256, momentum 0.9, weight decay 5e-4 and no augmentation fixed):

| name | distribution | why |
|---|---|---|
| `lr` | log-uniform [1e-3, 1e-1] | RUM README 0.1; SalUn README (its masked variant) 0.013 |
| `epochs` | int [2, 10] | RUM README 10 |

Paper config: RUM's README row for RL_og (plain Random Label, CIFAR-10 ResNet-18): 10 epochs at lr 0.1. As a RUM
stage the names are `{level}_rl_{field}` (`high_rl_lr`).
"""
from __future__ import annotations

import optuna

from .search_space import AUGMENT, MOMENTUM, WEIGHT_DECAY, SearchSpace, Stage, register

__all__ = ["RANDOM_LABEL", "RANDOM_LABEL_PAPER", "define_random_label", "suggest_random_label"]

LR = (1e-3, 1e-1)
EPOCHS = (2, 10)
PAPER_BATCH_SIZE = 256   # both references' --batch_size

RANDOM_LABEL_PAPER = {"lr": 0.1, "epochs": 10}   # RUM README, RL_og


def suggest_random_label(trial: optuna.Trial, prefix: str = "", *, full: bool = True) -> dict:
    """Suggest one Random Label config under `prefix` and return its constants (`full`: the uniform signature)."""
    p = prefix
    trial.suggest_float(f"{p}lr", *LR, log=True)
    trial.suggest_int(f"{p}epochs", *EPOCHS)
    return {f"{p}batch_size": PAPER_BATCH_SIZE, f"{p}momentum": MOMENTUM, f"{p}weight_decay": WEIGHT_DECAY,
            f"{p}augment": AUGMENT}


def define_random_label(trial: optuna.Trial) -> dict:
    """The flat Random Label space (module docstring); names are `RandomLabelConfig` fields."""
    return suggest_random_label(trial)


RANDOM_LABEL = register(SearchSpace(
    name="random_label",
    algorithm="random_label",
    define=define_random_label,
    paper_configs=(dict(RANDOM_LABEL_PAPER),),
    kind="flat",
    stage=Stage(alias="rl", suggest=suggest_random_label),
))
