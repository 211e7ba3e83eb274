"""The request a run is unlearning, and its round trip through a checkpoint.

    state = RequestState.begin(m, model, request, views=("report",), proxy_info={})
    saved = state.to_dict()                     # torch.save-able, torch.load(weights_only=True)-safe
    state = RequestState.from_dict(saved, ws, m, earlier, seed=spec.seed + j, views=("report",))

`from_dict` rebuilds the unlearner on a fresh model and loads its state; the retrained model's metrics are read
back from the store (they are cached artifacts), so a checkpoint holds only what cannot be recomputed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from .proxies import weights_sha
from .references import reference_metrics
from .run_check import Method
from .unlearning import Request


def ids_tensor(ids) -> torch.Tensor:
    """Example ids as an int64 tensor (what a weights-only checkpoint may hold)."""
    return torch.as_tensor(np.asarray(ids, dtype=np.int64))


def ids_array(t: torch.Tensor) -> np.ndarray:
    """The inverse of `ids_tensor`."""
    return t.cpu().numpy().astype(np.int64)


def _references(request: Request, views: Sequence[str]) -> dict:
    return {v: reference_metrics(request.ws, request.forget_ids, request.earlier, view=v) for v in views}


@dataclass
class RequestState:
    """One request in progress: the request, the retrain's metrics per view, the unlearner, and what the
    record will report (the starting weights' hash, the proxies' info, seconds, per-epoch history)."""

    request: Request
    reference: dict           # view → the retrained model's metrics
    unl: Any                  # the Unlearner
    start_sha: str
    proxy_info: dict
    seconds: float = 0.0
    history: list = field(default_factory=list)

    @classmethod
    def begin(cls, m: Method, model: nn.Module, request: Request, *, views: Sequence[str],
              proxy_info: dict) -> "RequestState":
        """Score the retrain for `request` (trains it if the store lacks it), then unlearn from `model`."""
        reference = _references(request, views)
        unl = m.unlearner.for_request(model, request, m.cfg)
        return cls(request, reference, unl, weights_sha(model), proxy_info)

    def to_dict(self) -> dict:
        req = self.request
        return {
            "forget_ids": ids_tensor(req.forget_ids),
            "groups": None if req.groups is None else [ids_tensor(g) for g in req.groups],
            "group_proxy": req.group_proxy,
            "scores": {k: torch.as_tensor(v) for k, v in req.scores.items()},
            "proxy_info": self.proxy_info, "start_sha": self.start_sha, "seconds": self.seconds,
            "history": self.history, "unl": self.unl.state_dict()}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any], ws, m: Method, earlier: Sequence[np.ndarray], *, seed: int,
                  views: Sequence[str]) -> "RequestState":
        """The request `to_dict` saved, on workspace `ws`, after the `earlier` requests, with the request's seed."""
        groups = None if state["groups"] is None else tuple(ids_array(g) for g in state["groups"])
        request = Request(ws, ids_array(state["forget_ids"]), list(earlier), seed,
                          {k: v.cpu().numpy() for k, v in state["scores"].items()}, groups, state["group_proxy"])
        unl = m.unlearner.for_request(ws.new_model(), request, m.cfg)
        unl.load_state_dict(state["unl"])
        return cls(request, _references(request, views), unl, state["start_sha"], dict(state["proxy_info"]),
                   float(state["seconds"]), list(state["history"]))
