"""The NegGrad+ space: Table C.3's β around the paper's rows, with fine resolution near β = 1.

What it searches (5 dimensions; momentum 0.9, weight decay 5e-4 and no augmentation are fixed):

| name | distribution | why |
|---|---|---|
| `lr` | log-uniform [1e-4, 1e-1] | paper 0.01; SCRUB VGG notebook 1e-4 |
| `epochs` | int [2, 10] | paper 10; RUM README 5 |
| `forget_weight` (1 − β) | log-uniform [1e-4, 0.5]; returns `beta` | paper β 0.9, 0.95; RUM 0.97, 0.99; 0.9999 |
| `forget_batch_size` | categorical {64, 128, 256, 512} | RUM 256, VGG notebook 128 |
| `retain_batch_size` | categorical {64, 128, 256} | RUM 256, VGG notebook 128 |

`forget_weight` is the one suggested name that is not a config field (the exception documented in
`search_spaces.search_space`): β's useful values crowd towards 1 (0.9 … 0.9999), so 1 − β is searched on a log
scale; β < 0.5 is left out because the paper's β = 0.2 diverged within one epoch (Fig. 3.3). So
β ∈ [0.5, 0.9999]. The paper configs carry `forget_weight` (0.1 for β 0.9), since enqueueing needs the
suggested names; `to_config_params` turns it back into `beta`. The paper calls NegGrad+ the method with "only
1 main hyperparameter", so five dimensions leave room for ~50 trials to find a good β/lr pair.
"""
from __future__ import annotations

import optuna

from .search_space import AUGMENT, DEFAULT_MODEL, MOMENTUM, WEIGHT_DECAY, SearchSpace, Stage, register, unique_configs

__all__ = ["NEGGRAD_PLUS", "NEGGRAD_PLUS_PAPER_BETAS", "NEGGRAD_PLUS_PAPER_LR", "beta_from_forget_weight",
           "define_neggrad_plus", "forget_weight_from_beta", "suggest_neggrad_plus"]

LR = (1e-4, 1e-1)
EPOCHS = (2, 10)
FORGET_WEIGHT = (1e-4, 0.5)   # 1 − β, so β ∈ [0.5, 0.9999]
FORGET_BATCH_SIZES = (64, 128, 256, 512)
RETAIN_BATCH_SIZES = (64, 128, 256)

PAPER_BATCH_SIZE = 256        # RUM's one --batch_size for both loaders

# Table C.3: β by dataset (both architectures); 10 epochs at lr 0.01 ("Unlearn Rate"). RUM^F NegGrad+ uses the
# same β and lr in every stage, with Table C.4's epochs (`search_spaces.rum`).
NEGGRAD_PLUS_PAPER_LR = 0.01
NEGGRAD_PLUS_PAPER_EPOCHS = 10
NEGGRAD_PLUS_PAPER_BETAS: dict[tuple[str, str], float] = {
    ("cifar10", "resnet18"): 0.9,
    ("cifar10", "vgg16_bn"): 0.9,
    ("cifar100", "resnet18"): 0.95,
    ("cifar100", "vgg16_bn"): 0.95,
}
assert DEFAULT_MODEL in NEGGRAD_PLUS_PAPER_BETAS

_DIGITS = 12  # 1 − β is rounded to 12 decimals so that 0.9 ↔ 0.1 exactly (1 − 0.9 is 0.09999999999999998)


def beta_from_forget_weight(forget_weight: float) -> float:
    """β = 1 − forget_weight, rounded to 12 decimals (an error far below any effect, exact paper values)."""
    return round(1.0 - forget_weight, _DIGITS)


def forget_weight_from_beta(beta: float) -> float:
    """forget_weight = 1 − β, rounded to 12 decimals; the inverse of `beta_from_forget_weight`."""
    return round(1.0 - beta, _DIGITS)


def suggest_neggrad_plus(trial: optuna.Trial, prefix: str = "", *, full: bool = True) -> dict:
    """Suggest one NegGrad+ config under `prefix` and return its constants, `beta` included.

    Args:
        trial: the trial (or Ray's wrapper of it).
        prefix: prepended to every name: `""` for the flat space, `"low_ng_"` etc. inside RUM.
        full: search both batch sizes too; `False` fixes them at 256 (RUM stages).
    """
    p = prefix
    trial.suggest_float(f"{p}lr", *LR, log=True)
    trial.suggest_int(f"{p}epochs", *EPOCHS)
    forget_weight = trial.suggest_float(f"{p}forget_weight", *FORGET_WEIGHT, log=True)
    out: dict = {f"{p}beta": beta_from_forget_weight(forget_weight)}
    if full:
        trial.suggest_categorical(f"{p}forget_batch_size", FORGET_BATCH_SIZES)
        trial.suggest_categorical(f"{p}retain_batch_size", RETAIN_BATCH_SIZES)
    else:
        out.update({f"{p}forget_batch_size": PAPER_BATCH_SIZE, f"{p}retain_batch_size": PAPER_BATCH_SIZE})
    out.update({f"{p}momentum": MOMENTUM, f"{p}weight_decay": WEIGHT_DECAY, f"{p}augment": AUGMENT})
    return out


def define_neggrad_plus(trial: optuna.Trial) -> dict:
    """The flat NegGrad+ space (module docstring); names are `NegGradPlusConfig` fields but `forget_weight`."""
    return suggest_neggrad_plus(trial)


def paper_point(beta: float, *, lr: float = NEGGRAD_PLUS_PAPER_LR, epochs: int = NEGGRAD_PLUS_PAPER_EPOCHS,
                full: bool = True) -> dict:
    """A NegGrad+ config as suggested names (unprefixed); defaults are Table C.3's 10 epochs at lr 0.01."""
    point = {"lr": lr, "epochs": epochs, "forget_weight": forget_weight_from_beta(beta)}
    if full:
        point.update(forget_batch_size=PAPER_BATCH_SIZE, retain_batch_size=PAPER_BATCH_SIZE)
    return point


_TABLE = {model: paper_point(beta) for model, beta in NEGGRAD_PLUS_PAPER_BETAS.items()}
NEGGRAD_PLUS = register(SearchSpace(
    name="neggrad_plus",
    algorithm="neggrad_plus",
    define=define_neggrad_plus,
    paper_configs=unique_configs([_TABLE[DEFAULT_MODEL], *_TABLE.values()]),
    kind="flat",
    paper_table=_TABLE,
    stage=Stage(alias="ng", suggest=suggest_neggrad_plus,
                helpers={"forget_weight": ("beta", beta_from_forget_weight, forget_weight_from_beta)}),
))
