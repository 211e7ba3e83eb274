"""A run's numbers: the unlearned model against the retrain, a row's metric columns, and the records.

    v = versus(state, views=("report",), mia=True)   # {"forget_acc", ..., "tow", "tow_mia"} or None
    row.update(row_metrics(v, records, views=("report",)))

Means over requests: a request that diverged (or whose model cannot be evaluated) scores 0 in ToW and ToW-MIA;
a row's mean counts the requests run so far, a record's mean all k (a request never run scores 0).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

from .artifacts import artifact_key
from .environment import environment
from .metrics import tow, tow_mia
from .proxies import weights_sha
from .references import METRIC_KEYS, SELECTION_KEYS
from .request_state import RequestState
from .rum import weights_finite

# view → its objectives (a search's objectives are the selection view's)
VIEW_OBJECTIVES = {"report": ("tow", "tow_mia"), "selection": ("sel_tow", "sel_tow_mia")}


def versus_retrain(u: Mapping[str, float], r: Mapping[str, float], view: str = "report") -> dict:
    """The unlearned model's metrics plus ToW (and ToW-MIA when `u` has an MIA) against the retrained model's.

    `report`: `tow`, `tow_mia` with the test set (the paper's); `selection`: `sel_tow`, `sel_tow_mia` with the
    validation split in the test term and the validation-based MIA (`Workspace.evaluate`).
    """
    if view == "report":
        out = {k: float(u[k]) for k in METRIC_KEYS if k in u}
        out["tow"] = tow(u, r)
        if "mia" in u:
            out["tow_mia"] = tow_mia(u, r)
        return out
    out = {k: float(u[k]) for k in SELECTION_KEYS if k in u}
    out["sel_tow"] = tow(u, r, held_out="val_acc")
    if "sel_mia" in u:
        out["sel_tow_mia"] = tow_mia(u, r, held_out="val_acc", mia="sel_mia")
    return out


def objectives(views: Sequence[str]) -> list[str]:
    return [k for v in views for k in VIEW_OBJECTIVES[v]]


def metric_keys(views: Sequence[str]) -> list[str]:
    keys = METRIC_KEYS if "report" in views else ()
    return list(dict.fromkeys([*keys, *(SELECTION_KEYS if "selection" in views else ())]))


def versus(state: RequestState, *, views: Sequence[str], mia: bool) -> Optional[dict]:
    """The request's current model against its retrain, or None where a diverged model cannot be evaluated."""
    model, req = state.unl.model, state.request
    if not weights_finite(model):
        return None
    try:
        u = req.ws.evaluate(model, req.forget_ids, *req.earlier, mia=mia, views=views)
    except ValueError:  # non-finite outputs (the SVC refuses NaN)
        return None
    out: dict = {}
    for view in views:
        out.update(versus_retrain(u, state.reference[view], view))
    return out


def row_metrics(v: Optional[dict], done: Sequence[dict], *, views: Sequence[str], diverged: bool = False) -> dict:
    """Metric columns of a row: this request's, and the means over the `done` requests' records and this one
    (a diverged request scores 0; an objective whose MIA was not run this epoch is NaN)."""
    v = v or {}
    row = {k: v.get(k, float("nan")) for k in metric_keys(views)}
    for k in objectives(views):
        now = 0.0 if diverged or not v else v.get(k, float("nan"))
        row[f"request_{k}"] = now
        row[k] = (sum(r[k] for r in done) + now) / (len(done) + 1)
    return row


def request_record(state: RequestState, v: Optional[dict], extra: dict, *, number: int, views: Sequence[str],
                   classes: Optional[Sequence[int]], diverged: Optional[dict]) -> dict:
    """The record of finished request `number` (1-based): sizes, metrics, the retrain's, seconds, provenance.
    `extra` is what the unlearner's `finish()` returned."""
    req = state.request
    n_train, excluded = len(req.ws.train), int(sum(map(len, req.earlier)))
    rec: dict = {"request": number, "forget_ids_sha": artifact_key("forget", ids=req.forget_ids),
                 "forget_size": int(len(req.forget_ids)),
                 "retain_size": int(n_train - len(req.forget_ids) - excluded), "excluded_size": excluded}
    if classes is not None:
        rec["classes"] = list(classes)
    rec.update({k: (v[k] if v else None) for k in metric_keys(views)})
    rec.update({k: (0.0 if diverged or not v else v[k]) for k in objectives(views)})
    if "report" in views:
        rec["retrain"] = {k: float(state.reference["report"][k]) for k in METRIC_KEYS}
    if "selection" in views:
        rec["retrain_selection"] = {k: float(state.reference["selection"][k]) for k in SELECTION_KEYS}
    # RUM: the stages' own unlearning time (its epochs also set up stages and score the groups)
    seconds = sum(x["unlearn_seconds"] for x in extra["stages"]) if "stages" in extra else state.seconds
    rec.update({"unlearn_seconds": seconds,
                "retrain_seconds": float(state.reference[views[0]]["seconds"]),
                "proxy_seconds": float(sum(i["seconds"] for i in state.proxy_info.values())),
                "proxies": state.proxy_info, "diverged": diverged, "start_weights_sha": state.start_sha,
                "end_weights_sha": weights_sha(state.unl.model), "history": state.history, **extra})
    return rec


def run_record(run) -> dict:
    """The record of `run` (a `run.Run`): per-request records under `requests`, the means over all k requests
    (a diverged request, and every request after it, scores 0), totals, the method, spec (its width, precision
    and memory format as resolved), seed and environment.
    With one request its fields are also at the top level, as a single experiment's record."""
    k, spec, records, views = run.requests, run.spec, run.records, run.views
    out = {
        **{key: sum(r[key] for r in records) / k for key in objectives(views)},
        "views": list(views),
        "requests": records,
        "request_count": k,
        "unlearn_seconds": float(sum(r["unlearn_seconds"] for r in records)),
        "retrain_seconds": float(sum(r["retrain_seconds"] for r in records)),
        "diverged": run.stopped,
        "diverged_requests": sum(1 for r in records if r["diverged"]),
        "algorithm": run.method.algorithm,
        "params": run.method.params,
        "ranking_model": run.ranking_model,
        "seed": spec.seed,
        "spec": {**dataclasses.asdict(spec), "width": run.ws.width, **run.ws.numerics.record(),
                 "forget_size": (len(run.fixed_ids) if run.fixed_ids is not None else
                                 None if spec.forget == "class" else spec.resolved_forget_size)},
        "env": environment(),
    }
    if k == 1 and records:
        r = records[0]
        out.update({key: r[key] for key in (*metric_keys(views), "forget_ids_sha", "history")})
        out.update({key: r[key] for key in ("retrain", "retrain_selection") if key in r})
        if spec.forget == "class":
            out["spec"]["forget_size"] = r["forget_size"]
    return out
