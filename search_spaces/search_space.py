"""`SearchSpace`: one named Optuna define-by-run space, its paper configs, and the hand-off to config kwargs.

The contract every space follows (the tuner, OptunaSearch and the GPU machine rely on it):

1. `define(trial)` only calls `trial.suggest_*` and returns a dict of constants: the fixed fields
   (momentum 0.9, weight decay 5e-4, ...) and values derived by trivial arithmetic from what it suggested
   (see 3). It does no I/O and imports nothing heavy; Ray calls it in the driver for every trial and warns
   when it takes over a second. Ray merges the returned dict over the suggested values, so a trial's
   config is `{**suggested, **returned}`. Ray passes a wrapper of `optuna.Trial` that forwards `suggest_*`;
   use nothing else of the trial.
2. Suggested names are the algorithm config's field names (`lr`, `epochs`, `alpha`, ...), so that for the
   flat spaces `ScrubConfig(**to_config_params("scrub", config))` is the whole hand-off. RUM spaces prefix
   each name with the stage and the algorithm (see `search_spaces.rum`).
3. Two documented deviations, both there to keep every distribution fixed across trials:

   * **NegGrad+ `forget_weight`.** β (the retain weight) matters on a log scale near 1 (0.9, 0.99, 0.9999
     all appear in the references), which `suggest_float(log=True)` cannot express for β itself. The
     spaces therefore suggest `forget_weight` = 1 − β, log-uniform in [1e-4, 0.5], and return `beta` as a
     derived constant. `forget_weight` is the only helper name: `to_config_params` drops it, and the
     paper configs carry it (enqueueing needs the suggested names). It is the one suggested name that is
     not a config field.
   * **SCRUB `max_steps <= epochs`.** `max_steps` is suggested in the fixed range [1, 10], independent of
     `epochs` in [2, 10], and the effective `epochs` returned is `max(epochs, max_steps)`. Suggesting
     `max_steps` with `high=epochs` would give the parameter a different distribution in every trial:
     Optuna's intersection search space (used by NSGA-II and multivariate TPE) keeps only parameters whose
     distribution is identical in all trials, so `max_steps` would silently fall back to random sampling.
     The Optuna trial keeps the sampled `epochs`; the config (and Ray's `config`) has the effective one.

`to_config_params` replays `define` on an `optuna.trial.FixedTrial`, so it gives the same config kwargs
whether it is handed Optuna's `trial.params` (suggested names only), an enqueued paper config, or Ray's
trial config (suggested names plus the returned constants, plus any other keys the tuner put in its
`param_space`, which are ignored). It is idempotent.

**Registered once.** Each space file builds its space and passes it to `register`, which puts it in `SPACES`;
`search_spaces/__init__.py` imports every space file (its one list), so `space_names()`, the tuner's choices
and RUM's stage choices follow from the files. A flat space with a `Stage` is a stage choice of the full `rum`
space: the `Stage` says how its algorithm is searched inside one RUM stage.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Literal, Mapping, Optional

import optuna

__all__ = [
    "AUGMENT",
    "DEFAULT_MODEL",
    "HELPER_PARAMS",
    "KINDS",
    "MOMENTUM",
    "SPACES",
    "WEIGHT_DECAY",
    "SearchSpace",
    "Stage",
    "register",
    "space_config_params",
    "stage_spaces",
    "unique_configs",
]

MOMENTUM = 0.9        # SGD momentum of every reference codebase (RUM:unlearn/impl.py)
WEIGHT_DECAY = 5e-4   # RUM:arg_parser.py default, the paper's large-scale value
AUGMENT = False       # RUM's pipelines pass --no_aug; unlearn_core's default

KINDS = ("flat", "rum")
DEFAULT_MODEL = ("cifar10", "resnet18")  # the row `paper_config` falls back to for unknown (dataset, arch)

# Suggested names that are not config fields; `to_config_params` drops them after converting.
HELPER_PARAMS = frozenset({"forget_weight"})


@dataclass(frozen=True)
class Stage:
    """How a flat space's algorithm is searched as one RUM stage (`search_spaces.rum`).

    Args:
        alias: the `alg` in the stage's names `{level}_{alg}_{field}` (`"ng"` for NegGrad+: `mid_ng_lr`).
        suggest: `suggest(trial, prefix, *, full)` suggests the stage's parameters under `prefix` and returns
            its constants (called with `full=False`: RUM stages fix what the flat space may also search).
        helpers: suggested names that are not config fields, as `{name: (field, to_field, from_field)}`:
            `forget_weight` is `("beta", beta_from_forget_weight, forget_weight_from_beta)`.
    """

    alias: str
    suggest: Callable[..., dict]
    helpers: Mapping[str, tuple[str, Callable[[Any], Any], Callable[[Any], Any]]] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class SearchSpace:
    """A named define-by-run search space and the paper's configs as points to evaluate first.

    .. code-block:: python

        space = search_spaces.get_space("scrub")
        searcher = OptunaSearch(space.define, metric=["tow", "tow_mia"], mode=["max", "max"],
                                points_to_evaluate=list(space.paper_configs))
        # in the trainable:
        cfg = ScrubConfig(**search_spaces.to_config_params(space.name, config))

    Args:
        name: the key in `search_spaces.SPACES`.
        algorithm: the unlearn_core algorithm it configures (`"scrub"`, `"salun"`, `"rum"`, ...).
        define: `define(trial) -> dict`; suggests and returns constants (module docstring of
            `search_spaces.search_space`). A module-level function, so that Ray can pickle the searcher.
        paper_configs: the distinct paper configs, each a dict of exactly the suggested names (enqueue-able
            with `study.enqueue_trial` / OptunaSearch `points_to_evaluate`). The first is the default row.
        kind: `"flat"` (config kwargs are the algorithm's fields) or `"rum"` (config kwargs are
            `{"plan": [three stages]}`). `kind == "rum"` must hold exactly when `algorithm == "rum"`.
        paper_table: `(dataset, arch) -> paper config`; every value must be one of `paper_configs`, and it
            must have a `DEFAULT_MODEL` row when it is not empty.
        stage: for a flat space, how its algorithm is searched as a RUM stage (`Stage`); None: not a stage choice.
    """

    name: str
    algorithm: str
    define: Callable[[optuna.Trial], dict]
    paper_configs: tuple[dict, ...]
    kind: Literal["flat", "rum"]
    paper_table: Mapping[tuple[str, str], dict] = field(default_factory=dict)
    # flat suggested + returned names -> the algorithm's config kwargs; None: drop HELPER_PARAMS (flat spaces)
    decode: Optional[Callable[[dict], dict]] = None
    stage: Optional[Stage] = None

    def __post_init__(self):
        if not isinstance(self.algorithm, str) or not self.algorithm.isidentifier():
            raise ValueError(f"algorithm must be an algorithm's name, got algorithm={self.algorithm!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got kind={self.kind!r}")
        if (self.kind == "rum") != (self.algorithm == "rum"):
            raise ValueError(f"kind == 'rum' must hold exactly when algorithm == 'rum', "
                             f"got kind={self.kind!r}, algorithm={self.algorithm!r}")
        if self.stage is not None and self.kind != "flat":
            raise ValueError(f"only a flat space can be a RUM stage, got kind={self.kind!r} with a stage")
        if not callable(self.define):
            raise ValueError(f"define must be callable, got define={self.define!r}")
        object.__setattr__(self, "paper_configs", tuple(self.paper_configs))
        object.__setattr__(self, "paper_table", MappingProxyType(dict(self.paper_table)))
        stray = [key for key, cfg in self.paper_table.items() if cfg not in self.paper_configs]
        if stray:
            raise ValueError(f"every paper_table row must be one of paper_configs, got stray rows {stray}")
        if self.paper_table and DEFAULT_MODEL not in self.paper_table:
            raise ValueError(f"paper_table must have a {DEFAULT_MODEL} row, got {sorted(self.paper_table)}")

    def paper_config(self, dataset: str, arch: str) -> dict:
        """The paper's config for `(dataset, arch)` (a copy); the `DEFAULT_MODEL` row for unknown pairs."""
        if not self.paper_table:
            return dict(self.paper_configs[0])
        return dict(self.paper_table.get((dataset, arch), self.paper_table[DEFAULT_MODEL]))


# name -> space; filled by `register` as the space files are imported (search_spaces/__init__.py lists them).
SPACES: dict[str, SearchSpace] = {}


def register(space: SearchSpace) -> SearchSpace:
    """Put `space` in `SPACES` and return it: `SCRUB = register(SearchSpace(name="scrub", ...))`.

    Raises:
        ValueError: the name is taken, or the space is a second RUM stage for one algorithm or alias.
    """
    if space.name in SPACES:
        raise ValueError(f"search space {space.name!r} is registered twice")
    if space.stage is not None:
        for other in stage_spaces().values():
            if space.algorithm == other.algorithm or space.stage.alias == other.stage.alias:
                raise ValueError(f"{space.name!r} and {other.name!r} are both RUM stages of {space.algorithm!r} "
                                 f"(aliases {space.stage.alias!r}, {other.stage.alias!r}): one stage per algorithm")
    SPACES[space.name] = space
    return space


def stage_spaces() -> dict[str, SearchSpace]:
    """algorithm -> its flat space that has a `Stage`, sorted by algorithm: what a RUM stage may run."""
    return {s.algorithm: s for s in sorted(SPACES.values(), key=lambda s: s.algorithm) if s.stage is not None}


def unique_configs(configs) -> tuple[dict, ...]:
    """`configs` without repeats, in first-seen order (dicts are unhashable, so no `dict.fromkeys`)."""
    out: list[dict] = []
    for cfg in configs:
        if cfg not in out:
            out.append(cfg)
    return tuple(out)


def space_config_params(space: SearchSpace, params: Mapping[str, Any]) -> dict:
    """Config kwargs for the algorithm from a trial's params.

    .. code-block:: python

        to_config_params("neggrad_plus", {"lr": 0.01, "epochs": 10, "forget_weight": 0.1,
                                          "forget_batch_size": 256, "retain_batch_size": 256})
        # {"lr": 0.01, "epochs": 10, "forget_batch_size": 256, "retain_batch_size": 256,
        #  "momentum": 0.9, "weight_decay": 0.0005, "augment": False, "beta": 0.9}

    Args:
        space: a `SearchSpace` or its name.
        params: at least every name the space suggests for this point (Optuna's `trial.params`, a paper
            config, or Ray's trial config). Keys the space does not produce are ignored.

    Returns:
        For a flat space, the algorithm config's fields (every field, fixed ones included); for a RUM
        space, `{"plan": [{"algorithm": ..., "params": {...}} for low, mid, high]}`.

    Raises:
        ValueError: a suggested name is missing from `params`, or a value is not one of a categorical's choices.
    """
    if isinstance(space, str):
        raise TypeError("pass the SearchSpace; search_spaces.to_config_params takes a name")
    replay = optuna.trial.FixedTrial(dict(params))
    try:
        returned = space.define(replay) or {}
    except ValueError as exc:
        raise ValueError(f"to_config_params({space.name!r}, ...): {exc}") from None
    flat = {**replay.params, **returned}
    if space.decode is not None:
        return space.decode(flat)
    return {k: v for k, v in flat.items() if k not in HELPER_PARAMS}
