"""Sequential unlearning (reference/algorithms.md §3.5): k forget requests, each starting from the last model.

Request j (1-based) selects n = `spec.resolved_forget_size` examples from the pool that remains after the
earlier requests, unlearns them starting from request j−1's model (request 1: the original), and is scored
against the model retrained from scratch on train − (F1 ∪ … ∪ Fj), on forget = Fj and retain = train −
(F1 ∪ … ∪ Fj). Retrains and their metrics are cached per union (`Workspace.retrain_metrics_for`).

Selection by `spec.forget`:

* `random` — `RandomState(seed + j − 1)`, so request 1 is exactly `run_experiment`'s forget set.
* `class` — class removal, one class per request: request j forgets class `spec.forget_classes[j − 1]`, so
  `forget_classes` must list k distinct classes (with k = 1 the request forgets all listed classes at once,
  as `run_experiment` does). n is then the class size, not `forget_size`.
* `mix` — the reference's mix of the memorization proxy `spec.proxy` (n/3 lowest, nearest the median,
  highest), with the proxy recomputed for each request on the model it starts from (§3.5: request 1 from the
  original, with learning-event proxies from its recorded events; later requests on the current model —
  see `proxies` for how learning-event proxies extend to an unlearned model). `selection="retrain"`
  instead scores request j on the model retrained without F1 … Fj−1: the ideal unlearned model, which makes
  the request history independent of the algorithm and its hyperparameters, so every configuration of a
  search shares one set of retrains (with `"current"`, the reference's rule, each configuration has its
  own forget sets and therefore its own retrains).

`algorithm` is `scrub`, `neggrad_plus`, `finetune` (params: its config) or `rum` (params: {"plan": [...],
"proxy": optional, default `spec.proxy`}); RUM refines each request by the proxy — the mix groups when
`spec.forget == "mix"` with the same proxy, else an equal three-way split of the request's forget set — and
its sub-steps' retain sets also exclude every earlier request (`rum.run_rum`).

A request history is data (§11.1–11.2): the proxy scores that chose a request's forget set are an artifact
keyed by the provenance of the model they describe (algorithm, params, earlier requests), so a second run
selects the same sets and finds every retrain in the store — and request j's retrain always uses exactly the
F1 … Fj of the unlearning run.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch.nn as nn

from .artifacts import artifact_key
from .errors import ConfigError, LossDiverged
from .experiment import METRIC_KEYS, ExperimentSpec, Workspace, environment, score
from .forget import class_forget, mix, mix_groups, random_forget
from .proxies import PROXIES, memorization, weights_sha
from .rum import check_config_types, parse_plan, plan_dict, rum_diverged, run_rum, split_by_score, weights_finite
from .unlearning import ALGORITHMS, config_dict, create_unlearner, make_config

SELECTIONS = ("current", "retrain")
RUM_PARAMS = ("plan", "proxy")


@dataclass
class Request:
    """What `on_request` gets after each request (index is 0-based)."""

    index: int
    record: dict
    model: nn.Module
    forget_ids: np.ndarray
    earlier: list[np.ndarray]
    groups: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]] = None


@dataclass(frozen=True)
class _Plan:
    algorithm: str
    cfg: Any                 # algorithm config (non-RUM)
    rum_plan: Optional[list]  # normalized RUM plan
    rum_proxy: Optional[str]
    params: dict             # what the record stores


def _algorithms() -> list[str]:
    return ["rum", *ALGORITHMS.names()]


def _parse(spec: ExperimentSpec, algorithm: str, params: Optional[Mapping], steps: int, selection: str) -> _Plan:
    """Every check that needs no data: names, params, counts."""
    if not isinstance(algorithm, str) or (algorithm != "rum" and algorithm not in ALGORITHMS):
        raise ConfigError(f"unknown algorithm {algorithm!r}; valid: {', '.join(_algorithms())}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError(f"steps (the number of requests) must be an integer >= 1, got {steps!r}")
    if selection not in SELECTIONS:
        raise ConfigError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    PROXIES.get(spec.proxy)  # unknown proxy → ConfigError, even where it is not used: a typo is a typo
    if params is not None and not isinstance(params, Mapping):
        raise ConfigError(f"params must be a mapping, got {params!r}")
    params = dict(params or {})
    if algorithm == "rum":
        extra = sorted(set(params) - set(RUM_PARAMS))
        if extra:
            raise ConfigError(f"unknown RUM parameter(s) {', '.join(map(str, extra))}; valid: {', '.join(RUM_PARAMS)}")
        if "plan" not in params:
            raise ConfigError('RUM needs params {"plan": [low, mid, high steps], "proxy": optional}')
        plan = plan_dict(parse_plan(params["plan"]))
        proxy = params.get("proxy") or spec.proxy
        PROXIES.get(proxy)
        return _Plan("rum", None, plan, proxy, {"plan": plan, "proxy": proxy})
    try:
        cfg = make_config(algorithm, params)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{algorithm}: bad value: {e}") from None
    check_config_types(cfg, algorithm)
    return _Plan(algorithm, cfg, None, None, config_dict(cfg))


def _request_classes(spec: ExperimentSpec, steps: int) -> list[tuple[int, ...]]:
    classes = tuple(spec.forget_classes)
    if steps == 1:
        return [classes]
    if len(classes) != steps or len(set(classes)) != len(classes):
        raise ConfigError(f"class forgetting with {steps} requests forgets one class per request: forget_classes "
                          f"must list {steps} distinct classes, got {classes}")
    return [(c,) for c in classes]


WORKSPACE_FIELDS = ("dataset", "arch", "seed", "split_seed", "train_epochs")  # what a Workspace is built from


def _check_workspace(spec: ExperimentSpec, ws: Workspace) -> None:
    """A given workspace must be the spec's: same data, model, seed and recipe (the forget fields may differ)."""
    diff = [(f, getattr(ws.spec, f), getattr(spec, f)) for f in WORKSPACE_FIELDS
            if getattr(spec, f) != getattr(ws.spec, f)]
    if spec.resolved_width != ws.width:
        diff.append(("width", ws.width, spec.resolved_width))
    if diff:
        raise ConfigError("the workspace was built for another experiment: "
                          + ", ".join(f"{f}={a!r} there, {b!r} in the spec" for f, a, b in diff))


def _check_sizes(spec: ExperimentSpec, ws: Workspace, plan: _Plan, steps: int) -> Optional[list[tuple[int, ...]]]:
    """Checks that need the data: the requests must fit the training split (nothing trains here)."""
    n_train = len(ws.train)
    needs3 = plan.algorithm == "rum" or spec.forget == "mix"
    if spec.forget == "class":
        per = _request_classes(spec, steps)
        sizes = [len(class_forget(ws.data.train.y, c)) for c in per]  # raises for absent classes
        if sum(sizes) >= n_train:
            raise ConfigError(f"forgetting classes {spec.forget_classes} removes all {n_train} training examples; "
                              "nothing would be left to retain")
        if needs3 and min(sizes) < 3:
            raise ConfigError(f"RUM splits each request into 3 groups; a request of {min(sizes)} examples is too small")
        return per
    n = spec.resolved_forget_size
    if needs3 and n < 3:
        raise ConfigError(f"{'RUM' if plan.algorithm == 'rum' else 'mix'} splits each request into 3 groups "
                          f"(low, mid, high): forget_size must be >= 3, got {n}")
    if steps * n >= n_train:
        raise ConfigError(f"{steps} requests of {n} examples need {steps * n} distinct examples plus at least one "
                          f"to retain, but the train split has {n_train}")
    return None


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def run_sequential(spec: ExperimentSpec, algorithm: str, params: Optional[Mapping[str, Any]] = None, *,
                   steps: int = 5, workspace: Optional[Workspace] = None, selection: str = "current",
                   on_request: Optional[Callable[[Request], None]] = None,
                   log: Callable[[str], None] = lambda s: None) -> dict:
    """Run `steps` unlearning requests one after another and return the record (module docstring).

    Record: `steps` (one per request: `request`, `forget_ids_sha`, `forget_size`, `retain_size`,
    `excluded_size`, the metrics of `score` — accuracies, `mia`, `tow`, `tow_mia`, None where a diverged
    model could not be evaluated — `retrain` (its metrics), `unlearn_seconds`, `retrain_seconds`,
    `proxy_seconds` (0 when the scores came from the store), `proxies`, `diverged`, `start_weights_sha`,
    `end_weights_sha`, and `history` or, for RUM, `substeps` and `group_sizes`), `algorithm`, `params` (every
    field explicit), `spec`, `env`, `requests`, `selection`, `seed`, the means `tow` / `tow_mia` over the
    evaluated requests, the totals `unlearn_seconds` / `retrain_seconds`, and `diverged` (None or
    {request, ...}). A diverged request is the last one run.

    Raises:
        ConfigError: unknown algorithm or proxy, bad params or RUM plan, or requests that do not fit the
            training split — all before anything is trained.
    """
    plan = _parse(spec, algorithm, params, steps, selection)
    ws = workspace or Workspace(spec, log=log)
    _check_workspace(spec, ws)
    per_classes = _check_sizes(spec, ws, plan, steps)
    n_train = len(ws.train)

    original, _ = ws.original()
    model = original
    base_key = {"algorithm": plan.algorithm, "params": plan.params, "seed": spec.seed, "forget": spec.forget,
                "selection": selection}
    earlier: list[np.ndarray] = []
    history_sets: list[list[np.ndarray]] = []  # what shaped the current model: each request's forget set/groups
    pool = np.arange(n_train, dtype=np.int64)
    records: list[dict] = []
    diverged_top = None
    for j in range(steps):
        # --- which proxies, on which model --------------------------------------------------------------
        wanted = []
        if spec.forget == "mix":
            wanted.append(spec.proxy)
        if plan.rum_proxy is not None and plan.rum_proxy not in wanted:
            wanted.append(plan.rum_proxy)
        scores, proxy_info = {}, {}
        if wanted:
            if j == 0:
                src_model, src_key = None, None
            elif selection == "retrain":
                union = np.sort(np.concatenate(earlier))
                src_model = ws.retrain(union)[0]
                src_key = "retrain:" + artifact_key("ids", ids=union)
            else:
                src_model = model
                src_key = "unlearned:" + artifact_key("unlearned", history=history_sets, **base_key)
            for name in wanted:
                scores[name], proxy_info[name] = memorization(ws, name, src_model, model_key=src_key,
                                                              return_info=True)

        # --- the request's forget set (and RUM groups) ----------------------------------------------------
        groups = None
        if spec.forget == "random":
            forget_ids = random_forget(pool, spec.resolved_forget_size, spec.seed + j)
        elif spec.forget == "class":
            forget_ids = class_forget(ws.data.train.y, per_classes[j], pool)
        elif plan.rum_proxy == spec.proxy:
            groups = mix_groups(scores[spec.proxy], spec.resolved_forget_size, pool)
            forget_ids = np.sort(np.concatenate(groups))
        else:
            forget_ids = mix(scores[spec.proxy], spec.resolved_forget_size, pool)
        if plan.rum_proxy is not None and groups is None:
            groups = split_by_score(scores[plan.rum_proxy], forget_ids)
        log(f"request {j + 1}/{steps}: {len(forget_ids)} examples to forget ({spec.forget}), "
            f"{sum(map(len, earlier))} forgotten before")

        # --- the retrained reference and the unlearning --------------------------------------------------
        r = ws.retrain_metrics_for(forget_ids, earlier)
        start_sha = weights_sha(model)
        substeps, history, diverged = None, None, None
        if plan.algorithm == "rum":
            new_model, substeps = run_rum(ws, model, groups, plan.rum_plan, exclude=earlier, seed=spec.seed + j,
                                          log=log)
            unlearn_seconds = float(sum(s["unlearn_seconds"] for s in substeps))
            diverged = rum_diverged(substeps)
        else:
            new_model = copy.deepcopy(model)
            forget, retain = ws.sets(forget_ids, *earlier)
            unl = create_unlearner(plan.algorithm, new_model, forget, retain, plan.cfg, seed=spec.seed + j,
                                   pad=ws.data.crop_pad, flip=ws.data.flip)
            history, unlearn_seconds = [], 0.0
            try:
                for e in range(plan.cfg.epochs):
                    t0 = time.perf_counter()
                    stats = unl.step()
                    unlearn_seconds += time.perf_counter() - t0
                    history.append({"epoch": e + 1, **stats})
                    log(f"  {plan.algorithm} epoch {e + 1}/{plan.cfg.epochs} "
                        + " ".join(f"{k} {v:.4g}" for k, v in stats.items()))
            except LossDiverged as err:
                diverged = {"reason": err.reason, "epoch": err.epoch, "value": err.value}
                log(f"  diverged: {err}")
            new_model = unl.model

        # --- metrics ------------------------------------------------------------------------------------
        u = None
        if weights_finite(new_model):
            try:
                u = ws.evaluate(new_model, forget_ids, *earlier)
            except ValueError:  # non-finite outputs of a diverged model (the SVC refuses NaN)
                if diverged is None:
                    raise
        rec: dict = {"request": j + 1, "forget_ids_sha": artifact_key("forget", ids=forget_ids),
                     "forget_size": int(len(forget_ids)),
                     "retain_size": int(n_train - len(forget_ids) - sum(map(len, earlier))),
                     "excluded_size": int(sum(map(len, earlier)))}
        if per_classes is not None:
            rec["classes"] = list(per_classes[j])
        rec.update(score(u, r) if u is not None else {**{k: None for k in METRIC_KEYS}, "tow": None, "tow_mia": None})
        rec.update({"retrain": {k: float(r[k]) for k in METRIC_KEYS}, "unlearn_seconds": unlearn_seconds,
                    "retrain_seconds": float(r["seconds"]),
                    "proxy_seconds": float(sum(i["seconds"] for i in proxy_info.values())),
                    "proxies": proxy_info, "diverged": diverged, "start_weights_sha": start_sha,
                    "end_weights_sha": weights_sha(new_model)})
        if substeps is not None:
            rec["substeps"] = substeps
            rec["group_sizes"] = [int(len(g)) for g in groups]
        else:
            rec["history"] = history
        records.append(rec)
        log(f"request {j + 1}/{steps}: tow {rec['tow']} tow_mia {rec['tow_mia']}")
        if on_request is not None:
            on_request(Request(j, rec, new_model, forget_ids, list(earlier), groups))

        earlier.append(forget_ids)
        history_sets.append(list(groups) if groups is not None else [forget_ids])
        pool = np.setdiff1d(pool, forget_ids)
        model = new_model
        if diverged is not None:
            diverged_top = {"request": j + 1, **diverged}
            break

    return {
        "steps": records,
        "tow": _mean([s["tow"] for s in records]),
        "tow_mia": _mean([s["tow_mia"] for s in records]),
        "unlearn_seconds": float(sum(s["unlearn_seconds"] for s in records)),
        "retrain_seconds": float(sum(s["retrain_seconds"] for s in records)),
        "diverged": diverged_top,
        "algorithm": plan.algorithm,
        "params": plan.params,
        "requests": int(steps),
        "selection": selection,
        "seed": spec.seed,
        "spec": {**dataclasses.asdict(spec), "width": ws.width,
                 "forget_size": None if spec.forget == "class" else spec.resolved_forget_size},
        "env": environment(),
    }


def run_rum_experiment(spec: ExperimentSpec, plan: Any, *, proxy: Optional[str] = None,
                       workspace: Optional[Workspace] = None, log: Callable[[str], None] = lambda s: None,
                       on_request: Optional[Callable[[Request], None]] = None) -> dict:
    """One RUM run (a single request): `run_sequential(spec, "rum", {"plan": plan, "proxy": proxy}, steps=1)`."""
    params = {"plan": plan, **({"proxy": proxy} if proxy else {})}
    return run_sequential(spec, "rum", params, steps=1, workspace=workspace, log=log, on_request=on_request)
