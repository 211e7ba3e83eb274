"""The l1-sparse space: learning rate, length and the l1 weight α of retain fine-tuning with a fading penalty.

What it searches (3 dimensions; retain batch 256, momentum 0.9, weight decay 5e-4 and no augmentation fixed):

| name | distribution | why |
|---|---|---|
| `lr` | log-uniform [1e-3, 1e-1] | scripted 0.01; RUM fine-tunes at 0.1 |
| `epochs` | int [2, 10] | scripted 10 |
| `alpha` | log-uniform [1e-6, 1e-3] | third-party scripts 1e-4; the parsers' 0.2 would zero an unscaled ‖θ‖₁ |

Paper config: the scripted lr and epochs of Unlearn-Sparse's README (also SalUn's before 2024-04 and RUM's):
10 epochs at lr 0.01; they leave α to the user (`${alpha}`), so α is 1e-4, the value third-party scripts use
(not authoritative). ‖θ‖₁ is a plain sum over ~11M ResNet-18 entries, so α must be small. As a RUM stage the
names are `{level}_l1_{field}` (`mid_l1_alpha`).
"""
from __future__ import annotations

import optuna

from .search_space import AUGMENT, MOMENTUM, WEIGHT_DECAY, SearchSpace, Stage, register

__all__ = ["L1_SPARSE", "L1_SPARSE_PAPER", "define_l1_sparse", "suggest_l1_sparse"]

LR = (1e-3, 1e-1)
EPOCHS = (2, 10)
ALPHA = (1e-6, 1e-3)
PAPER_BATCH_SIZE = 256

L1_SPARSE_PAPER = {"lr": 0.01, "epochs": 10, "alpha": 1e-4}   # Unlearn-Sparse README; α: third-party scripts


def suggest_l1_sparse(trial: optuna.Trial, prefix: str = "", *, full: bool = True) -> dict:
    """Suggest one l1-sparse config under `prefix` and return its constants (`full`: the uniform signature)."""
    p = prefix
    trial.suggest_float(f"{p}lr", *LR, log=True)
    trial.suggest_int(f"{p}epochs", *EPOCHS)
    trial.suggest_float(f"{p}alpha", *ALPHA, log=True)
    return {f"{p}retain_batch_size": PAPER_BATCH_SIZE, f"{p}momentum": MOMENTUM, f"{p}weight_decay": WEIGHT_DECAY,
            f"{p}augment": AUGMENT}


def define_l1_sparse(trial: optuna.Trial) -> dict:
    """The flat l1-sparse space (module docstring); names are `L1SparseConfig` fields."""
    return suggest_l1_sparse(trial)


L1_SPARSE = register(SearchSpace(
    name="l1_sparse",
    algorithm="l1_sparse",
    define=define_l1_sparse,
    paper_configs=(dict(L1_SPARSE_PAPER),),
    kind="flat",
    stage=Stage(alias="l1", suggest=suggest_l1_sparse),
))
