"""RUM (Zhao et al., 2024): refine the forget set by memorization, then unlearn the subsets one after another.

Refinement (reference/algorithms.md §3.2): by a memorization level (`proxies.memorization`, high =
memorized) the forget set becomes three groups — low, mid, high. Either the reference's fixed counts,
which select and refine at once (`forget.mix_groups`: bottom n/3, nearest-the-median n/3, top n/3 of a pool),
or `split_by_score`: an equal three-way split of a given forget set (random or class forgetting) by score.

Meta-algorithm (§3.3, §3.4): the groups are unlearned in the order low → mid → high, each sub-step with its
own algorithm (`none`, `finetune`, `neggrad_plus`, `scrub`) and hyperparameters, each a complete run with a
fresh optimizer that starts from the previous sub-step's model. During a sub-step the examples of later
sub-steps stay in the retain set: low: retain = D − L; mid: D − (L ∪ M); high: D − (L ∪ M ∪ H), and for
sequential requests also minus every earlier request's forget set (`exclude`).

Differences from the reference, on purpose:

* Levels are memorization levels for every proxy, so the order is low → high for all of them; the reference
  inverts the retain sets for learning-event proxies but its example script still runs them low, mid, high
  (§3.4, §10.5: a plan for confidence-type proxies ran high → low memorization there).
* The plan is validated as a whole before anything runs (`parse_plan`): a bad last sub-step does not waste
  the first two.
* A sub-step whose loss diverges ends RUM with the reason recorded in its sub-step record (no traceback);
  the sub-steps after it do not run.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from .errors import ConfigError, LossDiverged
from .forget import mix_groups, retain_ids, validate_ids
from .metrics import accuracy, predict_probs
from .unlearning import config_dict, create_unlearner, make_config

if TYPE_CHECKING:
    from .experiment import Workspace

LEVELS = ("low", "mid", "high")
RUM_ALGORITHMS = ("none", "finetune", "neggrad_plus", "scrub")
STEP_KEYS = ("algorithm", "params")


# ------------------------------------------------------------------------------------------------ the plan

def check_config_types(cfg, what: str) -> None:
    """Values of the right type: an int field must get an int (2.5 epochs would fail mid-run), no bools."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        ok = {"int": isinstance(v, (int, np.integer)) and not isinstance(v, bool),
              "float": isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool),
              "bool": isinstance(v, (bool, np.bool_))}.get(kind, True)
        if not ok:
            noun = {"int": "an integer", "float": "a number", "bool": "a boolean"}[kind]
            raise ConfigError(f"{what}: {f.name} must be {noun}, got {v!r}")


def parse_plan(plan: Any) -> list[tuple[str, Any]]:
    """Validate a RUM plan and return [(algorithm, config or None)] for low, mid, high.

    `plan` is `[{"algorithm": a, "params": {...}}] * 3` (low → mid → high) with `a` in `RUM_ALGORITHMS`, as
    `search_spaces.rum.unflatten_rum` makes it, or the same as a JSON string. `params` may be omitted or
    partial (missing fields take the algorithm's defaults); `none` takes no params. Everything is checked
    before anything runs: the number of steps, unknown keys, unknown algorithms, unknown parameters, and
    values (type and range, via each algorithm's config).

    Raises:
        ConfigError: saying which step and what is wrong.
    """
    if isinstance(plan, str):
        try:
            plan = json.loads(plan)
        except json.JSONDecodeError as e:
            raise ConfigError(f"a RUM plan string must be JSON: {e}") from None
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
        if "algorithm" not in step:
            raise ConfigError(f"RUM {level} step has no 'algorithm'; valid: {', '.join(RUM_ALGORITHMS)}")
        algorithm = step["algorithm"]
        if algorithm not in RUM_ALGORITHMS:
            raise ConfigError(f"RUM {level} step: unknown algorithm {algorithm!r}; valid: {', '.join(RUM_ALGORITHMS)}")
        params = step.get("params") or {}
        if not isinstance(params, Mapping):
            raise ConfigError(f"RUM {level} step: params must be a mapping, got {params!r}")
        if algorithm == "none":
            if params:
                raise ConfigError(f"RUM {level} step runs 'none', which takes no params, got {dict(params)}")
            out.append(("none", None))
            continue
        try:
            cfg = make_config(algorithm, params)
        except ConfigError as e:
            raise ConfigError(f"RUM {level} step ({algorithm}): {e}") from None
        except (TypeError, ValueError) as e:  # e.g. lr=None compared with 0 in the config's checks
            raise ConfigError(f"RUM {level} step ({algorithm}): bad value: {e}") from None
        check_config_types(cfg, f"RUM {level} step ({algorithm})")
        out.append((algorithm, cfg))
    return out


def plan_dict(steps: Sequence[tuple[str, Any]]) -> list[dict]:
    """A parsed plan back as a plan with every field explicit (what a record stores)."""
    return [{"algorithm": a, "params": config_dict(c) if c is not None else {}} for a, c in steps]


# ---------------------------------------------------------------------------------------------- the groups

def split_by_score(scores: np.ndarray, forget_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An equal three-way split of `forget_ids` by memorization level: (low, mid, high), sorted ids.

    Sizes as `forget.mix_groups`: high and mid n//3 each, low the rest; ties keep id order (stable sort).
    """
    s = np.asarray(scores, dtype=np.float64)
    ids = validate_ids(forget_ids, len(s))
    if len(ids) < 3:
        raise ConfigError(f"RUM needs a forget set of at least 3 examples (one per group), got {len(ids)}")
    if not np.isfinite(s[ids]).all():
        raise ConfigError("scores of the forget set must be finite")
    order = ids[np.argsort(s[ids], kind="stable")]
    k = len(ids) // 3
    low, mid, high = order[:len(ids) - 2 * k], order[len(ids) - 2 * k:len(ids) - k], order[len(ids) - k:]
    return np.sort(low), np.sort(mid), np.sort(high)


def rum_groups(scores: np.ndarray, n: int, pool=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference's fixed-count groups of a pool: `forget.mix_groups` (n in total, n//3 per group)."""
    return mix_groups(scores, n, pool)


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
    if exclude:
        ex = np.unique(np.concatenate([np.asarray(e, dtype=np.int64).reshape(-1) for e in exclude]))
        clash = np.intersect1d(allids, ex)
        if clash.size:
            raise ConfigError(f"{clash.size} RUM group ids are in the excluded (earlier requests') sets")
    retain_ids(n_train, *out, *exclude)  # raises if nothing is left to retain
    return tuple(out)


# ------------------------------------------------------------------------------------------------- running

def _group_accuracy(model: nn.Module, ws: "Workspace", groups: Sequence[np.ndarray]) -> dict[str, float]:
    acc = {}
    for level, g in zip(LEVELS, groups):
        d = ws.train.subset(g)
        acc[level] = accuracy(predict_probs(model, d.x), d.y)
    return acc


def run_rum(ws: "Workspace", model: nn.Module, groups: Sequence, plan: Any, *, exclude: Sequence = (),
            seed: int, on_substep: Optional[Callable[[dict], None]] = None,
            log: Callable[[str], None] = lambda s: None) -> tuple[nn.Module, list[dict]]:
    """Run a RUM plan on (low, mid, high) `groups`, starting from (a copy of) `model`.

    Sub-step i unlearns group i with its algorithm; forget = group i, retain = train − (groups 0..i) − every
    set in `exclude` (§3.4). Each sub-step starts from the previous one's model with a fresh optimizer and the
    generators of `seed`. The input model is not modified.

    Returns (final model, sub-step records). A record: `level`, `algorithm`, `params` (all fields),
    `forget_size`, `retain_size`, `epochs` (run), `unlearn_seconds` (the unlearning steps only), `history`
    (per-epoch stats), `group_acc` (accuracy % on each group after the sub-step), `diverged` (None or
    {reason, epoch, value}). A diverged sub-step is the last record: RUM stops there.
    `on_substep(record)` is called after each sub-step with the record plus `forget_ids` and `retain_ids`.

    Raises:
        ConfigError: bad plan or groups (before anything runs).
    """
    steps = parse_plan(plan)
    groups = check_groups(groups, len(ws.train), exclude)
    exclude = [np.asarray(e, dtype=np.int64).reshape(-1) for e in exclude]
    model = copy.deepcopy(model)
    records: list[dict] = []
    for i, (level, (algorithm, cfg), forget_ids) in enumerate(zip(LEVELS, steps, groups)):
        earlier = list(groups[:i])
        keep = retain_ids(len(ws.train), forget_ids, *earlier, *exclude)
        rec: dict = {"level": level, "algorithm": algorithm, "params": config_dict(cfg) if cfg is not None else {},
                     "forget_size": int(len(forget_ids)), "retain_size": int(len(keep)), "epochs": 0,
                     "unlearn_seconds": 0.0, "history": [], "diverged": None}
        if cfg is not None:
            forget, retain = ws.sets(forget_ids, *earlier, *exclude)
            unl = create_unlearner(algorithm, model, forget, retain, cfg, seed=seed,
                                   pad=ws.data.crop_pad, flip=ws.data.flip)
            try:
                for e in range(cfg.epochs):
                    t0 = time.perf_counter()
                    stats = unl.step()
                    rec["unlearn_seconds"] += time.perf_counter() - t0
                    rec["epochs"] = e + 1
                    rec["history"].append({"epoch": e + 1, **stats})
                    log(f"  RUM {level} {algorithm} epoch {e + 1}/{cfg.epochs} "
                        + " ".join(f"{k} {v:.4g}" for k, v in stats.items()))
            except LossDiverged as err:
                rec["diverged"] = {"reason": err.reason, "epoch": err.epoch, "value": err.value}
                log(f"  RUM {level} {algorithm} diverged: {err}")
            model = unl.model
        rec["group_acc"] = (_group_accuracy(model, ws, groups) if weights_finite(model)
                            else {lv: float("nan") for lv in LEVELS})
        records.append(rec)
        if on_substep is not None:
            on_substep({**rec, "forget_ids": forget_ids, "retain_ids": keep})
        if rec["diverged"] is not None:
            break
    return model, records


def rum_diverged(substeps: Sequence[Mapping]) -> Optional[dict]:
    """The divergence of a RUM run ({level, reason, epoch, value}) or None."""
    for s in substeps:
        if s.get("diverged"):
            return {"level": s["level"], **s["diverged"]}
    return None


def weights_finite(model: nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of `model` is finite."""
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())
