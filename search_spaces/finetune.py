"""The fine-tune space: the learning rate and length of plain training on the retain set (RUM's mid stage).

What it searches (2 dimensions; retain batch 256, momentum 0.9, weight decay 5e-4 and no augmentation fixed):

| name | distribution | why |
|---|---|---|
| `lr` | log-uniform [1e-3, 1e-1] | RUM:main_rum.py: the training lr 0.1; lower is plausible, higher is not |
| `epochs` | int [2, 10] | RUM:main_rum.py 10 |

Paper config: RUM:main_rum.py's mid stage of the full RUM on CIFAR-10 (10 epochs at lr 0.1), the one fine-tune
setting the RUM code runs. As a RUM stage the names are `{level}_ft_{field}` (`mid_ft_lr`).
"""
from __future__ import annotations

import optuna

from .search_space import AUGMENT, MOMENTUM, WEIGHT_DECAY, SearchSpace, Stage, register

__all__ = ["FINETUNE", "FINETUNE_PAPER", "define_finetune", "suggest_finetune"]

LR = (1e-3, 1e-1)
EPOCHS = (2, 10)
PAPER_BATCH_SIZE = 256

FINETUNE_PAPER = {"lr": 0.1, "epochs": 10}   # RUM:main_rum.py, the mid stage


def suggest_finetune(trial: optuna.Trial, prefix: str = "", *, full: bool = True) -> dict:
    """Suggest one fine-tune config under `prefix` (`""`, `"mid_ft_"`, ...) and return its constants.

    `full` is accepted for the uniform signature of `Stage.suggest`; fine-tune searches `lr` and `epochs` either way.
    """
    p = prefix
    trial.suggest_float(f"{p}lr", *LR, log=True)
    trial.suggest_int(f"{p}epochs", *EPOCHS)
    return {f"{p}retain_batch_size": PAPER_BATCH_SIZE, f"{p}momentum": MOMENTUM,
            f"{p}weight_decay": WEIGHT_DECAY, f"{p}augment": AUGMENT}


def define_finetune(trial: optuna.Trial) -> dict:
    """The flat fine-tune space (module docstring); names are `FinetuneConfig` fields."""
    return suggest_finetune(trial)


FINETUNE = register(SearchSpace(
    name="finetune",
    algorithm="finetune",
    define=define_finetune,
    paper_configs=(dict(FINETUNE_PAPER),),
    kind="flat",
    stage=Stage(alias="ft", suggest=suggest_finetune),
))
