"""The run driver: one experiment is k deletion requests of one algorithm, driven one epoch at a time.

    run = start(spec, "scrub", {"lr": 0.01}, requests=1)
    for row in run.epochs():      # one flat row per unlearning epoch
        ...                       # report it, checkpoint run.state_dict(), stop early
    record = run.record()

Everything that runs unlearning — the CLI, a trial, a final re-run, a study cell, the benchmark — goes through
`start`, so the protocol lives here once:

1. request j (0-based) starts from request j−1's model (request 0: the original, `references.original`);
2. its forget set is selected from what remains (`forget.select_request`); a mix and RUM rank by memorization
   scores computed on the original for request 0, and for later requests on the current model
   (`selection="current"`, the reference's rule) or on the model retrained without the earlier requests
   (`selection="retrain"`, the same sets for every configuration) — for proxies that follow the model
   (hold-out, `*_current`); learning-event proxies always rank by the original's recorded training events and
   `scores:FILE` by the file (`proxies.memorization`);
3. it is scored against the model retrained from scratch without F1 ∪ … ∪ Fj, on forget = Fj
   (`references.reference_metrics`);
4. the algorithm (`ALGORITHMS`, RUM included) unlearns it epoch by epoch; a loss that diverges ends the run,
   and the request scores 0 (ToW and ToW-MIA) — as every request that never ran.

A row has `request`, `epoch` (epochs done in the whole run), `request_epoch`, the epoch's loss stats, and —
at a request's last epoch, or every epoch with `evaluate_every_epoch` — the metrics: accuracies, `mia`,
`request_tow`, `request_tow_mia`, and `tow` / `tow_mia`, the mean over the run's k requests so far (requests
not yet run are not counted). `final` is 1 on the run's last row; `diverged` holds the reason or "".
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np
import torch
import torch.nn as nn

from .artifacts import artifact_key
from .environment import environment
from .errors import LossDiverged
from .forget import request_classes, select_request
from .metrics import tow, tow_mia
from .proxies import check_proxy, follows_model, memorization, proxy_center, weights_sha
from .references import METRIC_KEYS, SELECTION_KEYS, original, reference_metrics, retrain
from .rum import weights_finite
from .spec import ExperimentSpec
from .run_check import Method, check, check_sizes, method  # noqa: F401  (check, method: part of the API)
from .unlearning import Request
from .workspace import Workspace, check_views


OBJECTIVES = {"report": ("tow", "tow_mia"), "selection": ("sel_tow", "sel_tow_mia")}


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


@dataclass
class _Current:
    """The request being unlearned."""

    request: Request
    reference: dict           # view → the retrained model's metrics
    unl: Any
    start_sha: str
    proxy_info: dict
    seconds: float = 0.0
    history: list = field(default_factory=list)


class Run:
    """k deletion requests of one method on one workspace; see the module docstring. Create with `start`."""

    def __init__(self, ws: Workspace, spec: ExperimentSpec, m: Method, *, requests: int, selection: str,
                 forget_ids: Optional[np.ndarray], evaluate: Optional[Callable[[dict], str]],
                 views: tuple[str, ...],
                 on_request: Optional[Callable[[dict, nn.Module, Request], None]], log: Callable[[str], None]):
        self.ws, self.spec, self.method, self.requests = ws, spec, m, requests
        self.selection, self.fixed_ids, self.evaluate, self.views = selection, forget_ids, evaluate, views
        self.on_request, self.log = on_request, log
        self.classes = request_classes(spec.forget_classes, requests) if spec.forget == "class" else None
        self.index, self.epoch = 0, 0
        self.earlier: list[np.ndarray] = []
        self.shaped_by: list[list[np.ndarray]] = []  # what shaped the current model: each request's set/groups
        self.records: list[dict] = []
        self.model: Optional[nn.Module] = None       # the model after the last finished request
        self.current: Optional[_Current] = None
        self.stopped: Optional[dict] = None          # {"request", "reason", ...} once a request diverged

    # --- progress ------------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.stopped is not None or self.index >= self.requests

    @property
    def total_epochs(self) -> int:
        """Unlearning epochs of the whole run (k requests of the method's epochs)."""
        return self.requests * self.method.cfg.epochs

    def epochs(self) -> Iterator[dict]:
        """Run what is left, yielding one row per unlearning epoch (a request of 0 epochs yields one row)."""
        while not self.done:
            if self.current is None:
                self._begin()
            cur = self.current
            unl, stats, diverged = cur.unl, {}, None
            if unl.epoch < unl.epochs:
                t0 = time.perf_counter()
                try:
                    stats = unl.next_epoch()
                except LossDiverged as err:
                    diverged = {"reason": err.reason, "epoch": err.epoch, "value": err.value,
                                **({"level": err.level} if hasattr(err, "level") else {})}
                    self.log(f"  diverged: {err}")
                cur.seconds += time.perf_counter() - t0
                self.epoch += 1
                if diverged is None:
                    cur.history.append({"epoch": unl.epoch, **stats})
                    self.log(f"  {self.method.algorithm} epoch {unl.epoch}/{unl.epochs} "
                             + " ".join(f"{k} {v:.4g}" for k, v in stats.items()))
            row = {"request": self.index + 1, "epoch": self.epoch, "request_epoch": int(unl.epoch),
                   "progress": 100.0 * self.epoch / max(self.total_epochs, 1), "settled": bool(unl.settled),
                   **{k: float(v) for k, v in stats.items()}}
            if diverged is not None or unl.epoch >= unl.epochs:
                row.update(self._end(diverged))
                row["settled"] = True
            elif self.evaluate is not None and (what := self.evaluate(row)):
                row.update(self._row_metrics(self._versus(cur, mia=what == "all")))
            row["unlearn_seconds"] = self.unlearn_seconds
            row["final"] = int(self.done)
            row["diverged"] = "" if self.stopped is None else _reason(self.stopped)
            yield row

    def run(self) -> dict:
        """Run to the end and return the record."""
        for _ in self.epochs():
            pass
        return self.record()

    @property
    def unlearn_seconds(self) -> float:
        return float(sum(r["unlearn_seconds"] for r in self.records) + (self.current.seconds if self.current else 0))

    # --- one request ------------------------------------------------------------------------------------------
    def _pool(self) -> np.ndarray:
        n = len(self.ws.train)
        return np.setdiff1d(np.arange(n, dtype=np.int64), np.concatenate(self.earlier)) if self.earlier \
            else np.arange(n, dtype=np.int64)

    def _scores(self, j: int) -> tuple[dict, dict]:
        """Memorization scores this request needs (the mix's proxy, the algorithm's), on the protocol's model."""
        spec, m = self.spec, self.method
        wanted = list(dict.fromkeys(([spec.proxy] if spec.forget == "mix" else []) + list(m.unlearner.proxies(m.cfg))))
        scores, info = {}, {}
        if not wanted:
            return scores, info
        # Request 1, and proxies that ignore the model, score on the original: no model is loaded for them (a
        # retrain would be read from the store only to be ignored).
        src_model, src_key = None, None
        follows = j > 0 and any(follows_model(n) for n in wanted)
        if follows and self.selection == "retrain":
            union = np.sort(np.concatenate(self.earlier))
            src_model, src_key = retrain(self.ws, union)[0], "retrain:" + artifact_key("ids", ids=union)
        elif follows:
            src_model = self.model
            src_key = "unlearned:" + artifact_key(
                "unlearned", history=self.shaped_by, algorithm=m.algorithm, params=m.params, seed=spec.seed,
                forget=spec.forget, selection=self.selection)
        for name in wanted:
            scores[name], info[name] = memorization(self.ws, name, src_model, model_key=src_key, return_info=True)
        return scores, info

    def _begin(self) -> None:
        j, spec, ws = self.index, self.spec, self.ws
        model = original(ws)[0] if j == 0 else copy.deepcopy(self.model)
        scores, info = self._scores(j)
        if self.fixed_ids is not None:
            forget_ids, groups = self.fixed_ids, None
        else:
            forget_ids, groups = select_request(
                spec.forget, self._pool(), index=j, size=spec.resolved_forget_size, seed=spec.seed,
                labels=ws.data.train.y, classes=self.classes[j] if self.classes else (), scores=scores.get(spec.proxy),
                center=proxy_center(spec.proxy))
        self.log(f"request {j + 1}/{self.requests}: {len(forget_ids)} examples to forget ({spec.forget}), "
                 f"{sum(map(len, self.earlier))} forgotten before")
        ref = {v: reference_metrics(ws, forget_ids, self.earlier, view=v) for v in self.views}
        request = Request(ws, forget_ids, list(self.earlier), spec.seed + j, scores, groups,
                          spec.proxy if groups is not None else None)
        unl = self.method.unlearner.for_request(model, request, self.method.cfg)
        self.current = _Current(request, ref, unl, weights_sha(model), info)

    def _versus(self, cur: _Current, *, mia: bool) -> Optional[dict]:
        """The current model's metrics against the retrain, or None where a diverged model cannot be evaluated."""
        model = cur.unl.model
        if not weights_finite(model):
            return None
        try:
            u = self.ws.evaluate(model, cur.request.forget_ids, *cur.request.earlier, mia=mia, views=self.views)
        except ValueError:  # non-finite outputs (the SVC refuses NaN)
            return None
        out: dict = {}
        for view in self.views:
            out.update(versus_retrain(u, cur.reference[view], view))
        return out

    def _objectives(self) -> list[str]:
        return [k for v in self.views for k in OBJECTIVES[v]]

    def _metric_keys(self) -> list[str]:
        keys = METRIC_KEYS if "report" in self.views else ()
        return list(dict.fromkeys([*keys, *(SELECTION_KEYS if "selection" in self.views else ())]))

    def _row_metrics(self, v: Optional[dict], diverged: bool = False) -> dict:
        """Metric columns of a row: this request's, and the run's means so far (a diverged request scores 0;
        an objective whose MIA was not run this epoch is NaN)."""
        v = v or {}
        row = {k: v.get(k, float("nan")) for k in self._metric_keys()}
        done = self.records  # the finished requests (the current one is appended after this)
        for k in self._objectives():
            now = 0.0 if diverged or not v else v.get(k, float("nan"))
            row[f"request_{k}"] = now
            row[k] = (sum(r[k] for r in done) + now) / (len(done) + 1)
        return row

    def _end(self, diverged: Optional[dict]) -> dict:
        cur, j = self.current, self.index
        extra = cur.unl.finish()
        v = self._versus(cur, mia=True)
        req = cur.request
        n_train, excluded = len(self.ws.train), int(sum(map(len, req.earlier)))
        rec: dict = {"request": j + 1, "forget_ids_sha": artifact_key("forget", ids=req.forget_ids),
                     "forget_size": int(len(req.forget_ids)),
                     "retain_size": int(n_train - len(req.forget_ids) - excluded), "excluded_size": excluded}
        if self.classes is not None:
            rec["classes"] = list(self.classes[j])
        rec.update({k: (v[k] if v else None) for k in self._metric_keys()})
        rec.update({k: (0.0 if diverged or not v else v[k]) for k in self._objectives()})
        if "report" in self.views:
            rec["retrain"] = {k: float(cur.reference["report"][k]) for k in METRIC_KEYS}
        if "selection" in self.views:
            rec["retrain_selection"] = {k: float(cur.reference["selection"][k]) for k in SELECTION_KEYS}
        # RUM: the stages' own unlearning time (its epochs also set up stages and score the groups)
        seconds = sum(x["unlearn_seconds"] for x in extra["stages"]) if "stages" in extra else cur.seconds
        rec.update({"unlearn_seconds": seconds,
                    "retrain_seconds": float(cur.reference[self.views[0]]["seconds"]),
                    "proxy_seconds": float(sum(i["seconds"] for i in cur.proxy_info.values())),
                    "proxies": cur.proxy_info, "diverged": diverged, "start_weights_sha": cur.start_sha,
                    "end_weights_sha": weights_sha(cur.unl.model), "history": cur.history, **extra})
        row = self._row_metrics(v, diverged is not None)
        self.records.append(rec)
        self.log(f"request {j + 1}/{self.requests}: " + " ".join(f"{k} {rec[k]:.4f}" for k in self._objectives()))
        if self.on_request is not None:
            self.on_request(rec, cur.unl.model, req)
        self.earlier.append(req.forget_ids)
        self.shaped_by.append(list(req.groups) if req.groups is not None else [req.forget_ids])
        self.model, self.current, self.index = cur.unl.model, None, j + 1
        if diverged is not None:
            self.stopped = {"request": j + 1, **diverged}
        return row

    # --- results and resuming -----------------------------------------------------------------------------------
    def record(self) -> dict:
        """The run's record: per-request records under `requests`, the means over all k requests (a diverged
        request, and every request after it, scores 0), totals, the method, spec, seed and environment.
        With one request its fields are also at the top level, as a single experiment's record."""
        k = self.requests
        spec = self.spec
        out = {
            **{key: sum(r[key] for r in self.records) / k for key in self._objectives()},
            "views": list(self.views),
            "requests": self.records,
            "request_count": k,
            "unlearn_seconds": float(sum(r["unlearn_seconds"] for r in self.records)),
            "retrain_seconds": float(sum(r["retrain_seconds"] for r in self.records)),
            "diverged": self.stopped,
            "diverged_requests": sum(1 for r in self.records if r["diverged"]),
            "algorithm": self.method.algorithm,
            "params": self.method.params,
            "selection": self.selection,
            "seed": spec.seed,
            "spec": {**dataclasses.asdict(spec), "width": self.ws.width,
                     "forget_size": (len(self.fixed_ids) if self.fixed_ids is not None else
                                     None if spec.forget == "class" else spec.resolved_forget_size)},
            "env": environment(),
        }
        if k == 1 and self.records:
            r = self.records[0]
            out.update({key: r[key] for key in (*self._metric_keys(), "forget_ids_sha", "history")})
            out.update({key: r[key] for key in ("retrain", "retrain_selection") if key in r})
            if spec.forget == "class":
                out["spec"]["forget_size"] = r["forget_size"]
        return out

    def state_dict(self) -> dict:
        """Everything needed to continue this run in a fresh process (torch.load(weights_only=True)-safe)."""
        ids = lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64))  # noqa: E731
        cur = self.current
        return {
            "index": self.index, "epoch": self.epoch, "records": self.records, "stopped": self.stopped,
            "earlier": [ids(e) for e in self.earlier],
            "shaped_by": [[ids(g) for g in s] for s in self.shaped_by],
            "model": self.model.state_dict() if (self.model is not None and cur is None) else None,
            "current": None if cur is None else {
                "forget_ids": ids(cur.request.forget_ids),
                "groups": None if cur.request.groups is None else [ids(g) for g in cur.request.groups],
                "group_proxy": cur.request.group_proxy,
                "scores": {k: torch.as_tensor(v) for k, v in cur.request.scores.items()},
                "proxy_info": cur.proxy_info, "start_sha": cur.start_sha, "seconds": cur.seconds,
                "history": cur.history, "unl": cur.unl.state_dict()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        arr = lambda t: t.cpu().numpy().astype(np.int64)  # noqa: E731
        self.index, self.epoch = int(state["index"]), int(state["epoch"])
        self.records, self.stopped = [dict(r) for r in state["records"]], state["stopped"]
        self.earlier = [arr(e) for e in state["earlier"]]
        self.shaped_by = [[arr(g) for g in s] for s in state["shaped_by"]]
        self.model = self.ws.load_model(state["model"]) if state["model"] is not None else None
        self.current = None
        c = state["current"]
        if c is not None:
            forget_ids = arr(c["forget_ids"])
            groups = None if c["groups"] is None else tuple(arr(g) for g in c["groups"])
            request = Request(self.ws, forget_ids, list(self.earlier), self.spec.seed + self.index,
                              {k: v.cpu().numpy() for k, v in c["scores"].items()}, groups, c["group_proxy"])
            unl = self.method.unlearner.for_request(self.ws.new_model(), request, self.method.cfg)
            unl.load_state_dict(c["unl"])
            ref = {v: reference_metrics(self.ws, forget_ids, self.earlier, view=v) for v in self.views}
            self.current = _Current(request, ref, unl,
                                    c["start_sha"], dict(c["proxy_info"]), float(c["seconds"]), list(c["history"]))


def _reason(stopped: Mapping) -> str:
    where = f" ({stopped['level']} stage)" if stopped.get("level") else ""
    return f"loss diverged in request {stopped['request']}{where}, epoch {stopped['epoch'] + 1}: {stopped['reason']}"


def start(spec: ExperimentSpec, algorithm: str, params: Optional[Mapping[str, Any]] = None,
          workspace: Optional[Workspace] = None, *, requests: int = 1, selection: str = "current",
          forget_ids: Optional[np.ndarray] = None, evaluate_every_epoch: bool = False,
          evaluate: Optional[Callable[[dict], str]] = None, views: tuple[str, ...] = ("report",),
          on_request: Optional[Callable[[dict, nn.Module, Request], None]] = None,
          log: Callable[[str], None] = lambda s: None) -> Run:
    """Check everything that can be checked without training, then return the (not yet started) run.

    `forget_ids` replaces the spec's selection with a fixed set (one request: e.g. the union of k sequential
    requests forgotten at once). `on_request(record, model, request)` is called after each request.
    A request's last epoch is always evaluated in full. Other epochs are evaluated when `evaluate(row)` (given
    the row's `request`, `epoch`, `request_epoch`, `progress`, `settled`) returns "all" (accuracies and the
    SVC MIA) or "acc" (accuracies only: MIA and ToW-MIA columns NaN); `evaluate_every_epoch` means "all".
    `views`: "report" (test set, the paper's metrics: `tow`, `tow_mia`) and/or "selection" (validation only:
    `sel_tow`, `sel_tow_mia`; a search's trials use only this one and never touch the test split).

    Raises:
        ConfigError: unknown algorithm or proxy, bad hyperparameters or RUM plan, bad selection, or requests
            that do not fit the training split — all before anything is trained or written.
    """
    if forget_ids is not None:
        forget_ids = np.sort(np.asarray(forget_ids, dtype=np.int64))
    m = check(spec, algorithm, params, requests=requests, selection=selection, forget_ids=forget_ids)
    views = check_views(views)
    if evaluate_every_epoch and evaluate is None:
        evaluate = _every_epoch
    ws = workspace or Workspace(spec, log=log)
    ws.check_spec(spec)
    check_sizes(spec, len(ws.train), ws.data.train.y, m, requests, forget_ids)
    check_proxy(spec.proxy, ws.data)  # a scores file must have one score per official training example
    return Run(ws, spec, m, requests=int(requests), selection=selection, forget_ids=forget_ids,
               evaluate=evaluate, views=views, on_request=on_request, log=log)


def _every_epoch(row: dict) -> str:
    return "all"
