"""RUM (Zhao et al., 2024) as a registered meta-algorithm: refine a request by memorization, unlearn in stages.

Refinement (the RUM code's fixed counts): by a memorization level (`proxies.memorization`, high =
memorized) a request's forget set becomes three groups — low, mid, high. When the request was selected as
a mix by the same proxy, its mix groups are used as they are (the reference's fixed counts select and
refine at once); otherwise `split_by_score` splits the forget set into three parts by score (sizes as the mix:
high and mid n//3, low the rest), ties in the request's seeded random order.

Meta-algorithm (RUM's `main_rum.py`): the groups are unlearned in three *stages*, low → mid → high, each with its own
algorithm (`stage_algorithms()`: `none` and every registered `Unlearner`) and hyperparameters, each a complete
run with a fresh optimizer that starts from the previous stage's model. During a stage the examples of later
stages stay in the retain set: low: retain = D − L; mid: D − (L ∪ M); high: D − (L ∪ M ∪ H), and for
sequential requests also minus every earlier request's forget set.

RUM's config is its plan (`RumConfig.plan`, three `{"algorithm", "params"}` steps) and the proxy; the run
driver treats it like any other algorithm: `next_epoch()` runs the next epoch of the current stage, and
`state_dict()` holds the stage, so a trial resumes mid-stage.

Differences from the reference, on purpose:

* Levels are memorization levels for every proxy, so the order is low → high for all of them; the reference
  inverts the retain sets for learning-event proxies but its example script still runs them low, mid, high
  (the later Unlearning_VTs code runs them high, mid, low).
* The plan is validated as a whole before anything runs: a bad last stage does not waste the first two.
* A SalUn stage ranks saliency on its own starting model (the previous stage's output), with the top share of
  |gradient| kept, as the SalUn authors define it; RUM's fork ranks on the original model and keeps the
  least salient weights (docs/algorithms.md).
* A stage whose loss diverges ends the request with the reason recorded in its stage record; the stages
  after it do not run.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from .errors import ConfigError, LossDiverged
from .forget import retain_ids, tie_order, validate_ids
from .metrics import accuracy, predict_probs
from .proxies import check_proxy_name
from .unlearning import ALGORITHMS, Request, Unlearner, config_dict, make_config

LEVELS = ("low", "mid", "high")
STEP_KEYS = ("algorithm", "params")

# The RUM script's NegGrad+ plan (RUM:main_rum_proxy.py): β 0.99 → 0.97 → 0.97, lr 0.01 → 0.01 → 0.001,
# epochs 5 → 5 → 10 (the same epochs as Table C.4). The CLI's default plan. Not the paper's plan: that is
# Table C.3's β and lr in every stage with Table C.4's epochs (search_spaces.rum.RUM_NEGGRAD_PLUS_PLANS).
SCRIPT_NEGGRAD_PLUS_PLAN = (
    {"algorithm": "neggrad_plus", "params": {"lr": 0.01, "epochs": 5, "beta": 0.99}},
    {"algorithm": "neggrad_plus", "params": {"lr": 0.01, "epochs": 5, "beta": 0.97}},
    {"algorithm": "neggrad_plus", "params": {"lr": 0.001, "epochs": 10, "beta": 0.97}},
)

# The paper's best full RUM on CIFAR-10, none → fine-tune → SalUn (low, mid, high), with the RUM script's
# settings (RUM:main_rum.py: fine-tune 10 epochs at lr 0.1; SalUn 5 epochs at lr 0.1). The script names no mask
# ratio; 0.5 is SalUn's default. `--rum-plan paper_cifar10`.
PAPER_CIFAR10_PLAN = (
    {"algorithm": "none", "params": {}},
    {"algorithm": "finetune", "params": {"lr": 0.1, "epochs": 10}},
    {"algorithm": "salun", "params": {"lr": 0.1, "epochs": 5, "ratio": 0.5}},
)

# Plans by name: a plan may be given as one of these names (`parse_plan`, the CLI's `--rum-plan`).
PLANS = {"paper_cifar10": PAPER_CIFAR10_PLAN, "script_neggrad_plus": SCRIPT_NEGGRAD_PLUS_PLAN}


# ------------------------------------------------------------------------------------------------ the plan

def stage_algorithms() -> tuple[str, ...]:
    """What a stage may run: `none`, then every registered algorithm that unlearns one set (an `Unlearner`),
    sorted. Read from `ALGORITHMS` when asked (not at import), so a newly registered algorithm is a choice."""
    return ("none", *(n for n in ALGORITHMS.names() if issubclass(ALGORITHMS.get(n), Unlearner)))


def parse_plan(plan: Any) -> list[tuple[str, Any]]:
    """Validate a RUM plan and return [(algorithm, config or None)] for low, mid, high.

    `plan` is `[{"algorithm": a, "params": {...}}] * 3` (low → mid → high) with `a` in `stage_algorithms()`, as
    `search_spaces.rum.unflatten_rum` makes it, the same as a JSON string, or the name of one of `PLANS`
    (`"paper_cifar10"`). `params` may be omitted or partial (missing fields take the algorithm's defaults);
    `none` takes no params.

    Raises:
        ConfigError: saying which stage and what is wrong.
    """
    if isinstance(plan, str) and plan.strip() in PLANS:
        plan = PLANS[plan.strip()]
    elif isinstance(plan, str):
        try:
            plan = json.loads(plan)
        except json.JSONDecodeError as e:
            raise ConfigError(f"a RUM plan string must be JSON or one of {', '.join(PLANS)}: {e}") from None
    if isinstance(plan, Mapping) or not isinstance(plan, Sequence) or len(plan) != len(LEVELS):
        got = f"{len(plan)} steps" if isinstance(plan, Sequence) and not isinstance(plan, Mapping) else repr(plan)
        raise ConfigError(f"a RUM plan is a list of {len(LEVELS)} steps {LEVELS} "
                          f'[{{"algorithm": ..., "params": {{...}}}}, ...], got {got}')
    out = []
    for level, step in zip(LEVELS, plan):
        if not isinstance(step, Mapping):
            raise ConfigError(f"RUM {level} step must be a mapping with keys {STEP_KEYS}, got {step!r}")
        extra = sorted(set(step) - set(STEP_KEYS))
        if extra:
            raise ConfigError(f"RUM {level} step has unknown key(s) {', '.join(map(str, extra))}; valid: "
                              f"{', '.join(STEP_KEYS)}")
        choices = ", ".join(stage_algorithms())
        if "algorithm" not in step:
            raise ConfigError(f"RUM {level} step has no 'algorithm'; valid: {choices}")
        algorithm = step["algorithm"]
        if algorithm not in stage_algorithms():
            raise ConfigError(f"RUM {level} step: unknown algorithm {algorithm!r}; valid: {choices}")
        params = step.get("params") or {}
        if not isinstance(params, Mapping):
            raise ConfigError(f"RUM {level} step: params must be a mapping, got {params!r}")
        if algorithm == "none":
            if params:
                raise ConfigError(f"RUM {level} step runs 'none', which takes no params, got {dict(params)}")
            out.append(("none", None))
            continue
        try:
            out.append((algorithm, make_config(algorithm, params)))
        except ConfigError as e:
            raise ConfigError(f"RUM {level} step ({algorithm}): {e}") from None
    return out


def plan_dict(stages: Sequence[tuple[str, Any]]) -> list[dict]:
    """A parsed plan back as a plan with every field explicit (what a record stores)."""
    return [{"algorithm": a, "params": config_dict(c) if c is not None else {}} for a, c in stages]


@dataclass(frozen=True)
class RumConfig:
    """RUM's hyperparameters: its plan (low, mid, high stages) and the proxy that makes the groups."""

    plan: Any = SCRIPT_NEGGRAD_PLUS_PLAN
    proxy: Optional[str] = None      # None → the experiment's proxy (`ExperimentSpec.proxy`)

    def __post_init__(self):
        stages = parse_plan(self.plan)
        object.__setattr__(self, "plan", plan_dict(stages))  # every field explicit, as records store it
        object.__setattr__(self, "_stages", stages)
        if self.proxy is not None:
            check_proxy_name(self.proxy)  # a `PROXIES` name or scores:FILE

    @property
    def stages(self) -> list[tuple[str, Any]]:
        return self._stages

    @property
    def epochs(self) -> int:
        return sum(c.epochs for _, c in self._stages if c is not None)


# ---------------------------------------------------------------------------------------------- the groups

def split_by_score(scores: np.ndarray, forget_ids, *, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A three-way split of `forget_ids` by memorization level: (low, mid, high), sorted ids.

    Sizes as `forget.mix_groups`: high and mid n//3 each, low the rest (n − 2·(n//3)). Tied scores are
    ordered by `forget.tie_order(len(scores), seed)`, a seeded random order, never by id.
    """
    s = np.asarray(scores, dtype=np.float64)
    ids = validate_ids(forget_ids, len(s))
    if len(ids) < 3:
        raise ConfigError(f"RUM needs a forget set of at least 3 examples (one per group), got {len(ids)}")
    if not np.isfinite(s[ids]).all():
        raise ConfigError("scores of the forget set must be finite")
    order = ids[np.lexsort((tie_order(len(s), seed)[ids], s[ids]))]
    k = len(ids) // 3
    low, mid, high = order[:len(ids) - 2 * k], order[len(ids) - 2 * k:len(ids) - k], order[len(ids) - k:]
    return np.sort(low), np.sort(mid), np.sort(high)


def check_groups(groups: Sequence, n_train: int, exclude: Sequence = ()) -> tuple[np.ndarray, ...]:
    """Three non-empty, disjoint id sets outside `exclude` that leave a non-empty retain set."""
    if isinstance(groups, (str, bytes)) or len(groups) != len(LEVELS):
        raise ConfigError(f"RUM needs {len(LEVELS)} groups {LEVELS}, got {len(groups)}")
    out = []
    for level, g in zip(LEVELS, groups):
        try:
            out.append(validate_ids(g, n_train))
        except ConfigError as e:
            raise ConfigError(f"RUM {level} group: {e}") from None
    allids = np.concatenate(out)
    if len(np.unique(allids)) != len(allids):
        raise ConfigError("RUM groups must be disjoint: an example cannot be in two memorization groups")
    if len(exclude):
        ex = np.unique(np.concatenate([np.asarray(e, dtype=np.int64).reshape(-1) for e in exclude]))
        clash = np.intersect1d(allids, ex)
        if clash.size:
            raise ConfigError(f"{clash.size} RUM group ids are in the excluded (earlier requests') sets")
    retain_ids(n_train, *out, *exclude)  # raises if nothing is left to retain
    return tuple(out)


def weights_finite(model: nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of `model` is finite."""
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


# ------------------------------------------------------------------------------------------- the algorithm

@ALGORITHMS.register("rum")
class Rum:
    """The stages of one request, one epoch at a time (the `Unlearner` protocol of the run driver)."""

    Config = RumConfig

    @classmethod
    def proxies(cls, cfg: RumConfig) -> tuple[str, ...]:
        return (cfg.proxy,) if cfg.proxy else ()

    @classmethod
    def bind(cls, cfg: RumConfig, spec) -> RumConfig:
        """The experiment's proxy where the plan named none."""
        return cfg if cfg.proxy else dataclasses.replace(cfg, proxy=spec.proxy)

    @classmethod
    def for_request(cls, model: nn.Module, request: Request, cfg: RumConfig) -> "Rum":
        return cls(model, request, cfg)

    def __init__(self, model: nn.Module, request: Request, cfg: RumConfig):
        if cfg.proxy is None:
            raise ConfigError("RUM needs a proxy (RumConfig.proxy) to make its memorization groups")
        self.model, self.request, self.cfg = model, request, cfg
        n_train = len(request.ws.train)
        if request.groups is not None and request.group_proxy == cfg.proxy:
            groups = request.groups  # a mix by the same proxy: its fixed-count groups, as the reference
        else:
            groups = split_by_score(request.scores[cfg.proxy], request.forget_ids, seed=request.seed)
        self.groups = check_groups(groups, n_train, request.earlier)
        self.epoch, self.stage, self.inner = 0, 0, None
        self.records: list[dict] = []
        self.diverged = False

    @property
    def epochs(self) -> int:
        return self.cfg.epochs

    @property
    def settled(self) -> bool:
        return self.epoch >= self.epochs  # only the end of all three stages compares with other plans

    def _stage_sets(self, i: int):
        return self.groups[i], [*self.groups[:i], *self.request.earlier]

    def _open(self) -> None:
        """Start stages until one has epochs to run; stages of 0 epochs (`none`) are recorded and closed."""
        ws = self.request.ws
        while self.inner is None and self.stage < len(LEVELS):
            algorithm, cfg = self.cfg.stages[self.stage]
            forget_ids, exclude = self._stage_sets(self.stage)
            keep = retain_ids(len(ws.train), forget_ids, *exclude)
            self.records.append({"level": LEVELS[self.stage], "algorithm": algorithm,
                                 "params": config_dict(cfg) if cfg is not None else {},
                                 "forget_size": int(len(forget_ids)), "retain_size": int(len(keep)), "epochs": 0,
                                 "unlearn_seconds": 0.0, "history": [], "diverged": None})
            if cfg is None or cfg.epochs == 0:
                self._close()
            else:
                self.inner = self._create(self.stage)

    def _create(self, i: int):
        algorithm, cfg = self.cfg.stages[i]
        forget_ids, exclude = self._stage_sets(i)
        sub = Request(self.request.ws, forget_ids, exclude, self.request.seed)
        return ALGORITHMS.get(algorithm).for_request(self.model, sub, cfg)

    def _close(self) -> None:
        ws = self.request.ws
        acc = {}
        finite = weights_finite(self.model)
        for level, g in zip(LEVELS, self.groups):
            d = ws.train.subset(g)
            acc[level] = accuracy(predict_probs(self.model, d.x, numerics=d.numerics), d.y) if finite else float("nan")
        self.records[-1]["group_acc"] = acc
        self.inner, self.stage = None, self.stage + 1

    def next_epoch(self) -> dict:
        self._open()
        if self.inner is None:
            raise RuntimeError("RUM has no epochs left")
        rec = self.records[-1]
        t0 = time.perf_counter()
        try:
            stats = self.inner.next_epoch()
        except LossDiverged as err:
            rec["diverged"] = {"reason": err.reason, "epoch": err.epoch, "value": err.value}
            self.diverged = True
            self._close()
            err.level = rec["level"]
            raise
        rec["unlearn_seconds"] += time.perf_counter() - t0
        rec["epochs"] += 1
        rec["history"].append({"epoch": rec["epochs"], **stats})
        self.epoch += 1
        if self.inner.epoch >= self.inner.epochs:
            self._close()
        return stats

    def finish(self) -> dict:
        if not self.diverged:
            self._open()  # trailing stages of 0 epochs
        return {"stages": self.records, "group_sizes": [int(len(g)) for g in self.groups]}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "epoch": self.epoch, "stage": self.stage,
                "records": self.records, "inner": self.inner.state_dict() if self.inner is not None else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.epoch, self.stage = int(state["epoch"]), int(state["stage"])
        self.records = [dict(r) for r in state["records"]]
        self.inner = None
        if state["inner"] is not None:
            self.inner = self._create(self.stage)
            self.inner.load_state_dict(state["inner"])

