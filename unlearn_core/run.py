"""The run driver: one experiment is k deletion requests of one algorithm, driven one epoch at a time.

    run = start(spec, "scrub", {"lr": 0.01}, requests=1)
    for row in run.epochs():      # one flat row per unlearning epoch
        ...                       # report it, checkpoint run.state_dict(), stop early
    record = run.record()

Everything that runs unlearning — the CLI, a trial, a final re-run, a study cell, the benchmark — goes through
`start`, so the protocol lives here once:

1. request j (0-based) starts from request j−1's model (request 0: the original, `references.original`);
2. its forget set is taken from what remains, ranked for a mix and RUM by memorization scores computed on the
   original for request 0 and, for later requests, on the model `ranking_model` names ("current" or
   "retrain") — `next_request`;
3. it is scored against the model retrained from scratch without F1 ∪ … ∪ Fj, on forget = Fj
   (`references.reference_metrics`; the request in progress is a `request_state.RequestState`);
4. the algorithm (`ALGORITHMS`, RUM included) unlearns it epoch by epoch; a loss that diverges ends the run,
   and the request scores 0 (ToW and ToW-MIA) — as every request that never ran (`run_record`).

A row has `request`, `epoch` (epochs done in the whole run), `request_epoch`, the epoch's loss stats, and —
at a request's last epoch, or every epoch with `evaluate_every_epoch` — the metrics: accuracies, `mia`,
`request_tow`, `request_tow_mia`, and `tow` / `tow_mia`, the mean over the run's k requests so far (requests
not yet run are not counted). `final` is 1 on the run's last row; `diverged` holds the reason or "".
"""
from __future__ import annotations

import copy
import time
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np
import torch.nn as nn

from .errors import LossDiverged
from .forget import request_classes
from .next_request import next_request
from .proxies import check_proxy
from .references import original
from .request_state import RequestState, ids_array, ids_tensor
from .run_check import Method, check, check_sizes, method  # noqa: F401  (check, method: part of the API)
from .run_record import objectives, request_record, row_metrics, run_record, versus
from .spec import ExperimentSpec
from .unlearning import Request
from .workspace import Workspace, check_views


class Run:
    """k deletion requests of one method on one workspace; see the module docstring. Create with `start`."""

    def __init__(self, ws: Workspace, spec: ExperimentSpec, m: Method, *, requests: int, ranking_model: str,
                 forget_ids: Optional[np.ndarray], evaluate: Optional[Callable[[dict], str]],
                 views: tuple[str, ...],
                 on_request: Optional[Callable[[dict, nn.Module, Request], None]], log: Callable[[str], None]):
        self.ws, self.spec, self.method, self.requests = ws, spec, m, requests
        self.ranking_model, self.fixed_ids, self.evaluate, self.views = ranking_model, forget_ids, evaluate, views
        self.on_request, self.log = on_request, log
        self.classes = request_classes(spec.forget_classes, requests) if spec.forget == "class" else None
        self.index, self.epoch = 0, 0
        self.earlier: list[np.ndarray] = []
        self.shaped_by: list[list[np.ndarray]] = []  # what shaped the current model: each request's set/groups
        self.records: list[dict] = []
        self.model: Optional[nn.Module] = None       # the model after the last finished request
        self.current: Optional[RequestState] = None
        self.stopped: Optional[dict] = None          # {"request", "reason", ...} once a request diverged

    @property
    def done(self) -> bool:
        return self.stopped is not None or self.index >= self.requests

    @property
    def total_epochs(self) -> int:
        """Unlearning epochs of the whole run (k requests of the method's epochs)."""
        return self.requests * self.method.cfg.epochs

    @property
    def unlearn_seconds(self) -> float:
        return float(sum(r["unlearn_seconds"] for r in self.records) + (self.current.seconds if self.current else 0))

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
                v = versus(cur, views=self.views, mia=what == "all")
                row.update(row_metrics(v, self.records, views=self.views))
            row["unlearn_seconds"] = self.unlearn_seconds
            row["final"] = int(self.done)
            row["diverged"] = "" if self.stopped is None else _reason(self.stopped)
            yield row

    def run(self) -> dict:
        """Run to the end and return the record."""
        for _ in self.epochs():
            pass
        return self.record()

    def _begin(self) -> None:
        j, ws = self.index, self.ws
        model = original(ws)[0] if j == 0 else copy.deepcopy(self.model)
        request, info = next_request(
            ws, self.spec, self.method, index=j, earlier=self.earlier, shaped_by=self.shaped_by, model=self.model,
            ranking_model=self.ranking_model, classes=self.classes[j] if self.classes else (),
            forget_ids=self.fixed_ids)
        self.log(f"request {j + 1}/{self.requests}: {len(request.forget_ids)} examples to forget "
                 f"({self.spec.forget}), {sum(map(len, self.earlier))} forgotten before")
        self.current = RequestState.begin(self.method, model, request, views=self.views, proxy_info=info)

    def _end(self, diverged: Optional[dict]) -> dict:
        cur, j = self.current, self.index
        extra = cur.unl.finish()
        v = versus(cur, views=self.views, mia=True)
        rec = request_record(cur, v, extra, number=j + 1, views=self.views, diverged=diverged,
                             classes=self.classes[j] if self.classes is not None else None)
        row = row_metrics(v, self.records, views=self.views, diverged=diverged is not None)
        self.records.append(rec)
        self.log(f"request {j + 1}/{self.requests}: " + " ".join(f"{k} {rec[k]:.4f}" for k in objectives(self.views)))
        req = cur.request
        if self.on_request is not None:
            self.on_request(rec, cur.unl.model, req)
        self.earlier.append(req.forget_ids)
        self.shaped_by.append(list(req.groups) if req.groups is not None else [req.forget_ids])
        self.model, self.current, self.index = cur.unl.model, None, j + 1
        if diverged is not None:
            self.stopped = {"request": j + 1, **diverged}
        return row

    def record(self) -> dict:
        """The run's record (`run_record.run_record`)."""
        return run_record(self)

    def state_dict(self) -> dict:
        """Everything needed to continue this run in a fresh process (torch.load(weights_only=True)-safe)."""
        cur = self.current
        return {
            "index": self.index, "epoch": self.epoch, "records": self.records, "stopped": self.stopped,
            "earlier": [ids_tensor(e) for e in self.earlier],
            "shaped_by": [[ids_tensor(g) for g in s] for s in self.shaped_by],
            "model": self.model.state_dict() if (self.model is not None and cur is None) else None,
            "current": None if cur is None else cur.to_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.index, self.epoch = int(state["index"]), int(state["epoch"])
        self.records, self.stopped = [dict(r) for r in state["records"]], state["stopped"]
        self.earlier = [ids_array(e) for e in state["earlier"]]
        self.shaped_by = [[ids_array(g) for g in s] for s in state["shaped_by"]]
        self.model = self.ws.load_model(state["model"]) if state["model"] is not None else None
        self.current = None if state["current"] is None else RequestState.from_dict(
            state["current"], self.ws, self.method, self.earlier, seed=self.spec.seed + self.index, views=self.views)


def _reason(stopped: Mapping) -> str:
    where = f" ({stopped['level']} stage)" if stopped.get("level") else ""
    return f"loss diverged in request {stopped['request']}{where}, epoch {stopped['epoch'] + 1}: {stopped['reason']}"


def start(spec: ExperimentSpec, algorithm: str, params: Optional[Mapping[str, Any]] = None,
          workspace: Optional[Workspace] = None, *, requests: int = 1, ranking_model: str = "current",
          forget_ids: Optional[np.ndarray] = None, evaluate_every_epoch: bool = False,
          evaluate: Optional[Callable[[dict], str]] = None, views: tuple[str, ...] = ("report",),
          on_request: Optional[Callable[[dict, nn.Module, Request], None]] = None,
          log: Callable[[str], None] = lambda s: None) -> Run:
    """Check everything that can be checked without training, then return the (not yet started) run.

    `forget_ids` replaces the spec's forget set with a fixed one (one request: e.g. the union of k sequential
    requests forgotten at once). `on_request(record, model, request)` is called after each request.
    A request's last epoch is always evaluated in full. Other epochs are evaluated when `evaluate(row)` (given
    the row's `request`, `epoch`, `request_epoch`, `progress`, `settled`) returns "all" (accuracies and the
    SVC MIA) or "acc" (accuracies only: MIA and ToW-MIA columns NaN); `evaluate_every_epoch` means "all".
    `views`: "report" (test set, the paper's metrics: `tow`, `tow_mia`) and/or "selection" (validation only:
    `sel_tow`, `sel_tow_mia`; a search's trials use only this one and never touch the test split).

    Raises:
        ConfigError: unknown algorithm or proxy, bad hyperparameters or RUM plan, bad ranking model, or requests
            that do not fit the training split — all before anything is trained or written.
    """
    if forget_ids is not None:
        forget_ids = np.sort(np.asarray(forget_ids, dtype=np.int64))
    m = check(spec, algorithm, params, requests=requests, ranking_model=ranking_model, forget_ids=forget_ids)
    views = check_views(views)
    if evaluate_every_epoch and evaluate is None:
        evaluate = _every_epoch
    ws = workspace or Workspace(spec, log=log)
    ws.check_spec(spec)
    check_sizes(spec, len(ws.train), ws.data.train.y, m, requests, forget_ids)
    check_proxy(spec.proxy, ws.data)  # a scores file must have one score per official training example
    return Run(ws, spec, m, requests=int(requests), ranking_model=ranking_model, forget_ids=forget_ids,
               evaluate=evaluate, views=views, on_request=on_request, log=log)


def _every_epoch(row: dict) -> str:
    return "all"
