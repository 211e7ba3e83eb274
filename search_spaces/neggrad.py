"""The NegGrad (gradient ascent) space: learning rate and length of ascent on the forget set.

What it searches (2 dimensions; forget batch 256, momentum 0.9, weight decay 5e-4 and no augmentation fixed):

| name | distribution | why |
|---|---|---|
| `lr` | log-uniform [1e-5, 1e-2] | scripted 1e-4; the references' argparse default 0.01 is the top (ascent diverges) |
| `epochs` | int [2, 10] | scripted 5; argparse default 10 |

Paper config: the scripted config of all three references (Unlearn-Sparse README, SalUn README before 2024-04,
RUM README; CIFAR-10 ResNet-18): 5 epochs at lr 1e-4. As a RUM stage the names are `{level}_ga_{field}`.
"""
from __future__ import annotations

import optuna

from .search_space import AUGMENT, MOMENTUM, WEIGHT_DECAY, SearchSpace, Stage, register

__all__ = ["NEGGRAD", "NEGGRAD_PAPER", "define_neggrad", "suggest_neggrad"]

LR = (1e-5, 1e-2)
EPOCHS = (2, 10)
PAPER_BATCH_SIZE = 256

NEGGRAD_PAPER = {"lr": 1e-4, "epochs": 5}   # Unlearn-Sparse, SalUn (before 2024-04) and RUM READMEs


def suggest_neggrad(trial: optuna.Trial, prefix: str = "", *, full: bool = True) -> dict:
    """Suggest one NegGrad config under `prefix` and return its constants (`full`: the uniform signature)."""
    p = prefix
    trial.suggest_float(f"{p}lr", *LR, log=True)
    trial.suggest_int(f"{p}epochs", *EPOCHS)
    return {f"{p}forget_batch_size": PAPER_BATCH_SIZE, f"{p}momentum": MOMENTUM, f"{p}weight_decay": WEIGHT_DECAY,
            f"{p}augment": AUGMENT}


def define_neggrad(trial: optuna.Trial) -> dict:
    """The flat NegGrad space (module docstring); names are `NegGradConfig` fields."""
    return suggest_neggrad(trial)


NEGGRAD = register(SearchSpace(
    name="neggrad",
    algorithm="neggrad",
    define=define_neggrad,
    paper_configs=(dict(NEGGRAD_PAPER),),
    kind="flat",
    stage=Stage(alias="ga", suggest=suggest_neggrad),
))
