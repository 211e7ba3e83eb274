"""The SCRUB space: Table C.2's knobs around the paper's four rows.

**paper = what the paper ran: RUM code's msteps + 1 passes.** `max_steps` here keeps its exact-count meaning
(exactly `max_steps` epochs start with a forget-set max pass, as in Algorithm 1's text and
`unlearn_core.scrub`), for searched and paper configs alike. The paper's numbers, however, come from the RUM
code, whose loop (`e <= msteps` with e counted from 0) runs msteps + 1 max passes: Table C.2's "max steps 4"
was 5 passes. The paper points therefore carry Table C.2's max steps + 1 (`paper_max_steps`): 5, 8, 6, 8 for
C10-R18, C10-V16, C100-R18, C100-V16, all within 10 epochs. `SCRUB_PAPER_ROWS` keeps the table as printed.

What it searches (8 dimensions; momentum 0.9, weight decay 5e-4 and no augmentation are fixed):

| name | distribution | why |
|---|---|---|
| `lr` | log-uniform [1e-4, 1e-1] | paper 0.01; SCRUB notebooks 5e-4; RUM README 5e-3 |
| `epochs` | int [2, 10] | paper 10 |
| `max_steps` | int [1, 10]; effective `epochs` = max(epochs, max_steps) | paper 5, 6, 8 (C.2 + 1); grid {1,...,7} |
| `alpha` (KL weight) | log-uniform [1e-5, 3] | paper 0.9 / 0.1; grid {5e-4, 0.1, 0.9} |
| `gamma` (CE weight) | log-uniform [1e-5, 3] | paper 0.9 / 0.005 / 1e-5; grid {5e-4, 0.1, 0.9} |
| `temperature` | categorical {1, 2, 4, 8} | both codebases use 4; notebooks 2 and 4 |
| `forget_batch_size` | categorical {16, 32, 64, 128, 256, 512} | notebooks 16 to 512; RUM 256 |
| `retain_batch_size` | categorical {64, 128, 256} | notebooks 128 and 256; RUM 256 |

Why `max_steps` does not use `high=epochs`: see `search_spaces.search_space` (a fixed distribution keeps it
in the intersection search space that NSGA-II and multivariate TPE model). Eight dimensions are at the upper
end of what ~50-200 trials can explore, so the paper's rows are enqueued first (`SCRUB.paper_configs`).
The paper does not state T or the batch sizes: "defaults of the RUM codebase", i.e. one `--batch_size` 256
for both loaders, and `--kd_T 4` from RUM's README (its argparse default is None).
"""
from __future__ import annotations

import optuna

from .search_space import AUGMENT, DEFAULT_MODEL, MOMENTUM, WEIGHT_DECAY, SearchSpace, Stage, register, unique_configs

__all__ = ["PAPER_EXTRA_MAX_PASSES", "SCRUB", "SCRUB_PAPER_ROWS", "define_scrub", "paper_max_steps", "paper_row_point",
           "suggest_scrub"]

LR = (1e-4, 1e-1)
EPOCHS = (2, 10)
MAX_STEPS = (1, 10)
KL_CE_WEIGHT = (1e-5, 3.0)   # alpha and gamma
TEMPERATURES = (1.0, 2.0, 4.0, 8.0)
FORGET_BATCH_SIZES = (16, 32, 64, 128, 256, 512)
RETAIN_BATCH_SIZES = (64, 128, 256)

PAPER_TEMPERATURE = 4.0
PAPER_BATCH_SIZE = 256

# Table C.2 as printed: (dataset, arch) -> (alpha, gamma, max steps); all rows 10 epochs at lr 0.01. The max
# steps are the RUM code's `--msteps`, i.e. msteps + 1 max passes: see `paper_max_steps`.
SCRUB_PAPER_ROWS: dict[tuple[str, str], tuple[float, float, int]] = {
    ("cifar10", "resnet18"): (0.9, 0.9, 4),
    ("cifar10", "vgg16_bn"): (0.1, 0.005, 7),
    ("cifar100", "resnet18"): (0.9, 0.9, 5),
    ("cifar100", "vgg16_bn"): (0.9, 0.9, 7),
}
assert DEFAULT_MODEL in SCRUB_PAPER_ROWS

# The RUM code's SCRUB loop runs `e <= msteps` from e = 0: one max pass more than its `--msteps`.
PAPER_EXTRA_MAX_PASSES = 1
PAPER_EPOCHS = 10
assert all(PAPER_EPOCHS >= m + PAPER_EXTRA_MAX_PASSES and MAX_STEPS[0] <= m + PAPER_EXTRA_MAX_PASSES <= MAX_STEPS[1]
           for _, _, m in SCRUB_PAPER_ROWS.values()), "a paper point must fit the space and keep max_steps <= epochs"


def paper_max_steps(table_max_steps: int) -> int:
    """The max passes the paper ran for a Table C.2 "max steps" value: the RUM code's msteps + 1."""
    return table_max_steps + PAPER_EXTRA_MAX_PASSES


def suggest_scrub(trial: optuna.Trial, prefix: str = "", *, full: bool = True) -> dict:
    """Suggest one SCRUB config under `prefix` and return its constants (names prefixed the same way).

    Args:
        trial: the trial (or Ray's wrapper of it).
        prefix: prepended to every name: `""` for the flat space, `"low_scrub_"` etc. inside RUM.
        full: search `temperature` and both batch sizes too; `False` fixes them at the paper's 4 and 256
            (RUM stages: three SCRUB runs would otherwise need 24 dimensions).
    """
    p = prefix
    trial.suggest_float(f"{p}lr", *LR, log=True)
    epochs = trial.suggest_int(f"{p}epochs", *EPOCHS)
    max_steps = trial.suggest_int(f"{p}max_steps", *MAX_STEPS)
    trial.suggest_float(f"{p}alpha", *KL_CE_WEIGHT, log=True)
    trial.suggest_float(f"{p}gamma", *KL_CE_WEIGHT, log=True)
    out: dict = {f"{p}epochs": max(epochs, max_steps)}
    if full:
        trial.suggest_categorical(f"{p}temperature", TEMPERATURES)
        trial.suggest_categorical(f"{p}forget_batch_size", FORGET_BATCH_SIZES)
        trial.suggest_categorical(f"{p}retain_batch_size", RETAIN_BATCH_SIZES)
    else:
        out.update({f"{p}temperature": PAPER_TEMPERATURE, f"{p}forget_batch_size": PAPER_BATCH_SIZE,
                    f"{p}retain_batch_size": PAPER_BATCH_SIZE})
    out.update({f"{p}momentum": MOMENTUM, f"{p}weight_decay": WEIGHT_DECAY, f"{p}augment": AUGMENT})
    return out


def define_scrub(trial: optuna.Trial) -> dict:
    """The flat SCRUB space (module docstring); names are `ScrubConfig` fields."""
    return suggest_scrub(trial)


def paper_point(alpha: float, gamma: float, max_steps: int, *, full: bool = True) -> dict:
    """A SCRUB config as suggested names (unprefixed), 10 epochs at lr 0.01; `max_steps` as given (exact count)."""
    point = {"lr": 0.01, "epochs": PAPER_EPOCHS, "max_steps": max_steps, "alpha": alpha, "gamma": gamma}
    if full:
        point.update(temperature=PAPER_TEMPERATURE, forget_batch_size=PAPER_BATCH_SIZE,
                     retain_batch_size=PAPER_BATCH_SIZE)
    return point


def paper_row_point(alpha: float, gamma: float, table_max_steps: int, *, full: bool = True) -> dict:
    """A Table C.2 row as the paper ran it: its α, γ and `paper_max_steps(table_max_steps)` max passes."""
    return paper_point(alpha, gamma, paper_max_steps(table_max_steps), full=full)


def _paper_table() -> dict[tuple[str, str], dict]:
    return {model: paper_row_point(*row) for model, row in SCRUB_PAPER_ROWS.items()}


_TABLE = _paper_table()
SCRUB = register(SearchSpace(
    name="scrub",
    algorithm="scrub",
    define=define_scrub,
    paper_configs=unique_configs([_TABLE[DEFAULT_MODEL], *_TABLE.values()]),
    kind="flat",
    paper_table=_TABLE,
    stage=Stage(alias="scrub", suggest=suggest_scrub),
))
