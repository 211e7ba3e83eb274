"""The SalUn space: learning rate, length and the saliency mask's ratio, around the published configs.

What it searches (3 dimensions; batch 256, momentum 0.9, weight decay 5e-4 and no augmentation fixed):

| name | distribution | why |
|---|---|---|
| `lr` | log-uniform [1e-3, 1e-1] | SalUn README 0.013; its README until 2024-04 and the RUM script 0.1 |
| `epochs` | int [2, 10] | SalUn README 10; RUM script 5 |
| `ratio` | uniform [0.1, 1.0] | share of weights trained; SalUn offers 0.1 … 1.0, uses 0.5; 1.0 = Random Label |

Paper configs, in the order enqueued (CIFAR-10 ResNet-18 all):

1. SalUn README (current): 10 epochs, lr 0.013, ratio 0.5 (`with_0.5.pt`), 4500 random examples.
2. RUM script (RUM:main_rum.py), SalUn on the high-memorization group: 5 epochs, lr 0.1; it names no ratio, so
   SalUn's 0.5.
3. SalUn README until 2024-04 (the concatenated-loader layout this project runs): 10 epochs, lr 0.1, ratio 0.5.

As a RUM stage the names are `{level}_salun_{field}` (`high_salun_ratio`).
"""
from __future__ import annotations

import optuna

from .search_space import AUGMENT, MOMENTUM, WEIGHT_DECAY, SearchSpace, Stage, register

__all__ = ["SALUN", "SALUN_README", "SALUN_RUM_SCRIPT", "define_salun", "suggest_salun"]

LR = (1e-3, 1e-1)
EPOCHS = (2, 10)
RATIO = (0.1, 1.0)
PAPER_BATCH_SIZE = 256   # both references' --batch_size

SALUN_README = {"lr": 0.013, "epochs": 10, "ratio": 0.5}       # SalUn README, CIFAR-10 ResNet-18
SALUN_RUM_SCRIPT = {"lr": 0.1, "epochs": 5, "ratio": 0.5}      # RUM:main_rum.py, the high stage
SALUN_README_2023 = {"lr": 0.1, "epochs": 10, "ratio": 0.5}    # SalUn README until 2024-04


def suggest_salun(trial: optuna.Trial, prefix: str = "", *, full: bool = True) -> dict:
    """Suggest one SalUn config under `prefix` and return its constants (`full`: the uniform signature)."""
    p = prefix
    trial.suggest_float(f"{p}lr", *LR, log=True)
    trial.suggest_int(f"{p}epochs", *EPOCHS)
    trial.suggest_float(f"{p}ratio", *RATIO)
    return {f"{p}batch_size": PAPER_BATCH_SIZE, f"{p}momentum": MOMENTUM, f"{p}weight_decay": WEIGHT_DECAY,
            f"{p}augment": AUGMENT}


def define_salun(trial: optuna.Trial) -> dict:
    """The flat SalUn space (module docstring); names are `SalUnConfig` fields."""
    return suggest_salun(trial)


SALUN = register(SearchSpace(
    name="salun",
    algorithm="salun",
    define=define_salun,
    paper_configs=(dict(SALUN_README), dict(SALUN_RUM_SCRIPT), dict(SALUN_README_2023)),
    kind="flat",
    stage=Stage(alias="salun", suggest=suggest_salun),
))
