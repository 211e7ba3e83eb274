"""RUM spaces: three stages run low → mid → high memorization, each one algorithm with its own params.

A RUM plan is `[{"algorithm": a, "params": {...a's config fields}} for low, mid, high]` with `a` one of
`stage_algorithms()`: `none` (`params == {}`) and the algorithm of every registered flat space that has a
`Stage` (`search_space.stage_spaces()`): adding such a space adds a stage choice. Optuna needs flat names, so:

* **Naming convention.** `{level}_algorithm` is the stage's algorithm, and every algorithm parameter is
  `{level}_{alg}_{field}` with `alg` the space's `Stage.alias` (`scrub`, `ng` for NegGrad+, `ft` for fine-tune,
  ...): `low_scrub_alpha`, `mid_ng_forget_weight`, `high_ft_lr`. The algorithm is *always* in the name, even
  where only one algorithm can run, so one name always means one distribution: in the `rum` space `low_scrub_lr`
  and `low_ng_lr` are separate parameters (TPE models them separately; Optuna's storage would reject a name
  whose choices change), and the same name means the same distribution in all three spaces. `flatten_rum` /
  `unflatten_rum` convert.
* `rum_scrub` and `rum_neggrad_plus` suggest `{level}_algorithm` from a single choice. Optuna records a
  single-choice categorical without sampling it and keeps it out of TPE's model, so the three spaces are
  one define function (`_define_rum`) with different choices, and every RUM trial's params unflatten alone.

The spaces, and why (**paper = what the paper ran**: the RUM code's settings behind the paper's numbers):

* `rum_scrub` (15 dimensions): per stage SCRUB's `lr`, `epochs`, `max_steps`, `alpha`, `gamma` in the ranges
  of `search_spaces.scrub`; temperature 4 and both batch sizes 256 are fixed (RUM's one `--batch_size`), since
  three full SCRUB spaces (24 dimensions) are too many for ~200 trials. Paper (Table C.4): 10 → 10 → 10 epochs,
  each stage with the Table C.2 row of its (dataset, arch), lr 0.01, and the RUM code's msteps + 1 max
  passes (Table C.2's max steps + 1, as in `search_spaces.scrub`: 5 for C10-R18, whose table value is 4).
* `rum_neggrad_plus` (9 dimensions): per stage `lr`, `epochs`, `forget_weight` = 1 − β as in
  `search_spaces.neggrad_plus`; batch sizes 256. Paper: the per-algorithm values in RUM are the tuned ones of
  Appendix C, so every stage takes Table C.3's β and lr of its (dataset, arch) (β 0.9 on CIFAR-10, 0.95 on
  CIFAR-100, lr 0.01; one value per dataset, both architectures) with Table C.4's epochs 5 → 5 → 10
  (`RUM_NEGGRAD_PLUS_PLANS`). The RUM *script's* plan (RUM:main_rum_proxy.py: β 0.99 → 0.97 → 0.97, lr
  0.01 → 0.01 → 0.001, same epochs; `unlearn_core.rum.SCRIPT_NEGGRAD_PLUS_PLAN`, the CLI's default) is
  `RUM_SCRIPT_NEGGRAD_PLUS_PLAN`, enqueued as an extra (not the first, in no table row) paper config.
* `rum` (conditional): per stage an algorithm from `stage_algorithms()` and that algorithm's stage
  parameters (each space's `Stage.suggest`, e.g. fine-tune's `lr` and `epochs`). Paper: the best full RUM on
  CIFAR-10 is none → finetune → SalUn, the CIFAR-10 starting point with the RUM script's settings
  (RUM:main_rum.py: finetune 10 epochs at lr 0.1, SalUn 5 epochs at lr 0.1; ratio 0.5, SalUn's default, as the
  script names none): `RUM_CIFAR10_PLAN`, = `unlearn_core.rum.PAPER_CIFAR10_PLAN`. On CIFAR-100 the paper
  finds NegGrad+ best on every subset, so the CIFAR-100 starting point is the `rum_neggrad_plus` paper plan
  of its (dataset, arch).
  Conditional parameters are absent from some trials, so NSGA-II and multivariate TPE (which model only the
  intersection search space) sample them independently; `TPESampler(multivariate=True, group=True)` models
  each branch.

Every space fixes momentum 0.9, weight decay 5e-4 and no augmentation (RUM's pipelines pass `--no_aug`).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import optuna

from .finetune import FINETUNE_PAPER
from .neggrad_plus import NEGGRAD_PLUS_PAPER_BETAS, NEGGRAD_PLUS_PAPER_LR
from .salun import SALUN_RUM_SCRIPT
from .scrub import SCRUB_PAPER_ROWS, paper_row_point
from .search_space import DEFAULT_MODEL, SearchSpace, Stage, register, stage_spaces, unique_configs

__all__ = ["LEVELS", "RUM", "RUM_CIFAR10_PLAN", "RUM_NEGGRAD_PLUS", "RUM_NEGGRAD_PLUS_EPOCHS",
           "RUM_NEGGRAD_PLUS_PLANS", "RUM_SCRIPT_NEGGRAD_PLUS_PLAN", "RUM_SCRUB", "RUM_SCRUB_PLANS", "define_rum",
           "define_rum_neggrad_plus", "define_rum_scrub", "flatten_rum", "stage_algorithms", "unflatten_rum"]

LEVELS = ("low", "mid", "high")


def stage_algorithms() -> tuple[str, ...]:
    """What a stage may run: `none`, then the algorithm of every flat space with a `Stage`, sorted."""
    return ("none", *stage_spaces())


def _check_algorithm(level: str, algorithm: Any) -> None:
    if algorithm not in stage_algorithms():
        raise ValueError(f"{level}_algorithm must be one of {stage_algorithms()}, got {algorithm!r}")


def _stage(level: str, algorithm: Any) -> Stage:
    """The `Stage` of `algorithm`, a stage choice other than `none` (ValueError naming the level if not one)."""
    _check_algorithm(level, algorithm)
    return stage_spaces()[algorithm].stage


def _define_rum(trial: optuna.Trial, choices: Sequence[str]) -> dict:
    out: dict = {}
    for level in LEVELS:
        algorithm = trial.suggest_categorical(f"{level}_algorithm", tuple(choices))
        if algorithm != "none":
            stage = _stage(level, algorithm)
            out.update(stage.suggest(trial, f"{level}_{stage.alias}_", full=False))
    return out


def define_rum_scrub(trial: optuna.Trial) -> dict:
    """RUM^F with SCRUB in every stage (module docstring)."""
    return _define_rum(trial, ("scrub",))


def define_rum_neggrad_plus(trial: optuna.Trial) -> dict:
    """RUM^F with NegGrad+ in every stage (module docstring)."""
    return _define_rum(trial, ("neggrad_plus",))


def define_rum(trial: optuna.Trial) -> dict:
    """Full RUM: each stage picks one of `stage_algorithms()` (module docstring)."""
    return _define_rum(trial, stage_algorithms())


def unflatten_rum(params: Mapping[str, Any]) -> list[dict]:
    """The plan `[{"algorithm": ..., "params": {...}}]` (low, mid, high) from flat RUM names.

    For each level the params are the keys `{level}_{alg}_*` of that level's algorithm, without the prefix;
    keys of other algorithms and unrelated keys are ignored. A helper name becomes its field (`Stage.helpers`:
    `forget_weight` becomes `beta`, kept if both are given, as in Ray's trial config where they agree).

    .. code-block:: python

        unflatten_rum({"low_algorithm": "none", "mid_algorithm": "finetune", "mid_ft_lr": 0.1,
                       "mid_ft_epochs": 10, "high_algorithm": "neggrad_plus", "high_ng_lr": 0.001,
                       "high_ng_epochs": 10, "high_ng_forget_weight": 0.03})
        # [{"algorithm": "none", "params": {}},
        #  {"algorithm": "finetune", "params": {"lr": 0.1, "epochs": 10}},
        #  {"algorithm": "neggrad_plus", "params": {"lr": 0.001, "epochs": 10, "beta": 0.97}}]

    Raises:
        ValueError: a `{level}_algorithm` is missing or not one of `stage_algorithms()`.
    """
    plan = []
    for level in LEVELS:
        key = f"{level}_algorithm"
        if key not in params:
            raise ValueError(f"{key} must be given for every level {LEVELS}, got keys {sorted(params)}")
        algorithm = params[key]
        _check_algorithm(level, algorithm)
        step: dict = {}
        if algorithm != "none":
            stage = _stage(level, algorithm)
            prefix = f"{level}_{stage.alias}_"
            step = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
            for name, (field, to_field, _) in stage.helpers.items():
                if name in step:
                    step.setdefault(field, to_field(step.pop(name)))
        plan.append({"algorithm": algorithm, "params": step})
    return plan


def flatten_rum(plan: Sequence[Mapping[str, Any]]) -> dict:
    """Flat RUM names from a plan; the inverse of `unflatten_rum` (a helper's field becomes the helper:
    `beta` becomes `forget_weight`).

    Used to enqueue plans: a plan that holds exactly the searched fields flattens to a point of the space.

    Raises:
        ValueError: the plan does not have three steps, an algorithm is unknown, or `none` has params.
    """
    if len(plan) != len(LEVELS):
        raise ValueError(f"a RUM plan must have {len(LEVELS)} steps {LEVELS}, got {len(plan)}")
    flat: dict = {}
    for level, step in zip(LEVELS, plan):
        algorithm = step["algorithm"]
        _check_algorithm(level, algorithm)
        flat[f"{level}_algorithm"] = algorithm
        params = dict(step.get("params") or {})
        if algorithm == "none":
            if params:
                raise ValueError(f"the {level} step runs 'none' and must have no params, got {params}")
            continue
        stage = _stage(level, algorithm)
        for name, (field, _, from_field) in stage.helpers.items():
            if field in params:
                params[name] = from_field(params.pop(field))
        prefix = f"{level}_{stage.alias}_"
        flat.update({prefix + k: v for k, v in params.items()})
    return flat


# --- the paper's plans (searched fields only, so that they flatten to points of the spaces) ---------------

def _scrub_step(alpha: float, gamma: float, table_max_steps: int) -> dict:
    """A Table C.2 row as the paper ran it in a RUM stage: Table C.2's max steps + 1 max passes."""
    return {"algorithm": "scrub", "params": paper_row_point(alpha, gamma, table_max_steps, full=False)}


def _ng_step(beta: float, lr: float, epochs: int) -> dict:
    return {"algorithm": "neggrad_plus", "params": {"lr": lr, "epochs": epochs, "beta": beta}}


NONE_STEP = {"algorithm": "none", "params": {}}
FINETUNE_STEP = {"algorithm": "finetune", "params": dict(FINETUNE_PAPER)}   # RUM:main_rum.py
RUM_NEGGRAD_PLUS_EPOCHS = (5, 5, 10)   # Table C.4, NG: 5 → 5 → 10 (low → mid → high)
# (dataset, arch) -> the paper's RUM^F NegGrad+ plan: Table C.3's β and lr in every stage, Table C.4's epochs.
RUM_NEGGRAD_PLUS_PLANS: dict[tuple[str, str], list[dict]] = {
    model: [_ng_step(beta, NEGGRAD_PLUS_PAPER_LR, epochs) for epochs in RUM_NEGGRAD_PLUS_EPOCHS]
    for model, beta in NEGGRAD_PLUS_PAPER_BETAS.items()}
# The RUM script's plan (RUM:main_rum_proxy.py), not the paper's: = unlearn_core.rum.SCRIPT_NEGGRAD_PLUS_PLAN.
RUM_SCRIPT_NEGGRAD_PLUS_PLAN = [_ng_step(0.99, 0.01, 5), _ng_step(0.97, 0.01, 5), _ng_step(0.97, 0.001, 10)]
# (dataset, arch) -> the paper's RUM^F SCRUB plan: the Table C.2 row in every stage (Table C.4: 10 → 10 → 10).
RUM_SCRUB_PLANS: dict[tuple[str, str], list[dict]] = {
    model: [_scrub_step(*row)] * len(LEVELS) for model, row in SCRUB_PAPER_ROWS.items()}
# The paper's best full RUM on CIFAR-10, none → finetune → SalUn, with the RUM script's settings (RUM:main_rum.py).
RUM_CIFAR10_PLAN = [NONE_STEP, FINETUNE_STEP, {"algorithm": "salun", "params": dict(SALUN_RUM_SCRIPT)}]

_RUM_SCRUB_TABLE = {model: flatten_rum(plan) for model, plan in RUM_SCRUB_PLANS.items()}
_RUM_NG_TABLE = {model: flatten_rum(plan) for model, plan in RUM_NEGGRAD_PLUS_PLANS.items()}
_RUM_TABLE = {(dataset, arch): flatten_rum(RUM_CIFAR10_PLAN) if dataset == "cifar10" else _RUM_NG_TABLE[dataset, arch]
              for dataset, arch in RUM_NEGGRAD_PLUS_PLANS}


def _space(name: str, define: Callable[[optuna.Trial], dict], table: dict, extra: Sequence[dict] = ()) -> SearchSpace:
    return register(SearchSpace(name=name, algorithm="rum", define=define,
                                paper_configs=unique_configs([table[DEFAULT_MODEL], *table.values(), *extra]),
                                kind="rum", paper_table=table, decode=lambda flat: {"plan": unflatten_rum(flat)}))


RUM_SCRUB = _space("rum_scrub", define_rum_scrub, _RUM_SCRUB_TABLE)
RUM_NEGGRAD_PLUS = _space("rum_neggrad_plus", define_rum_neggrad_plus, _RUM_NG_TABLE,
                          extra=[flatten_rum(RUM_SCRIPT_NEGGRAD_PLUS_PLAN)])
RUM = _space("rum", define_rum, _RUM_TABLE)
