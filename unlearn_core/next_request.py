"""The next deletion request of a run: its memorization scores and its forget set, by the protocol's rules.

    request, proxy_info = next_request(ws, spec, m, index=1, earlier=[f1], shaped_by=[[f1]], model=unlearned,
                                       ranking_model="current")

Scores are computed on the original for request 1, and for later requests on the current model
(`ranking_model="current"`, the RUM code's rule) or on the model retrained without the earlier requests
(`"retrain"`: the same sets for every configuration) — for proxies that follow the model (hold-out,
`*_current`); learning-event proxies always rank by the original's recorded training events and `scores:FILE`
by the file (`proxies.memorization`). The forget set is then taken from what the earlier requests left
(`forget.select_request`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch.nn as nn

from .artifacts import artifact_key
from .forget import select_request
from .proxies import follows_model, memorization, proxy_center
from .references import retrain
from .run_check import Method
from .spec import ExperimentSpec
from .unlearning import Request
from .workspace import Workspace


def request_proxies(spec: ExperimentSpec, m: Method) -> list[str]:
    """The proxies a request needs: the mix's (it selects by it), then the algorithm's (RUM refines by its)."""
    return list(dict.fromkeys(([spec.proxy] if spec.forget == "mix" else []) + list(m.unlearner.proxies(m.cfg))))


def request_scores(ws: Workspace, spec: ExperimentSpec, m: Method, *, earlier: Sequence[np.ndarray],
                   shaped_by: Sequence[Sequence[np.ndarray]], model: Optional[nn.Module],
                   ranking_model: str) -> tuple[dict, dict]:
    """proxy name → memorization levels, and proxy name → `memorization`'s info, on the protocol's model.

    `earlier`: the earlier requests' forget sets; `model`: the model after them (None for request 1);
    `shaped_by`: each earlier request's set or groups, which with the method identify `model` in the cache.
    """
    wanted = request_proxies(spec, m)
    # Request 1, and proxies that ignore the model, score on the original: no model is loaded for them (a
    # retrain would be read from the store only to be ignored).
    src_model, src_key = None, None
    if earlier and any(follows_model(n) for n in wanted):
        if ranking_model == "retrain":
            union = np.sort(np.concatenate(earlier))
            src_model, src_key = retrain(ws, union)[0], "retrain:" + artifact_key("ids", ids=union)
        else:
            src_model = model
            # the key's field keeps its first name, `selection`, so scores already in a store stay valid
            src_key = "unlearned:" + artifact_key(
                "unlearned", history=list(shaped_by), algorithm=m.algorithm, params=m.params, seed=spec.seed,
                forget=spec.forget, selection=ranking_model)
    scores, info = {}, {}
    for name in wanted:
        scores[name], info[name] = memorization(ws, name, src_model, model_key=src_key, return_info=True)
    return scores, info


def remaining(n_train: int, earlier: Sequence[np.ndarray]) -> np.ndarray:
    """The ids no earlier request took, sorted: the pool the next request is selected from."""
    everything = np.arange(n_train, dtype=np.int64)
    return np.setdiff1d(everything, np.concatenate(earlier)) if len(earlier) else everything


def next_request(ws: Workspace, spec: ExperimentSpec, m: Method, *, index: int, earlier: Sequence[np.ndarray],
                 shaped_by: Sequence[Sequence[np.ndarray]], model: Optional[nn.Module], ranking_model: str,
                 classes: Sequence[int] = (), forget_ids: Optional[np.ndarray] = None) -> tuple[Request, dict]:
    """Request `index` (0-based), as its unlearner is given it, and the proxies' info.

    `classes`: this request's classes for a class forget set (`forget.request_classes`). `forget_ids` replaces
    the spec's forget set with a fixed one (a run of one request).
    """
    scores, info = request_scores(ws, spec, m, earlier=earlier, shaped_by=shaped_by, model=model,
                                  ranking_model=ranking_model)
    groups = None
    if forget_ids is None:
        forget_ids, groups = select_request(
            spec.forget, remaining(len(ws.train), earlier), index=index, size=spec.resolved_forget_size,
            seed=spec.seed, labels=ws.data.train.y, classes=classes, scores=scores.get(spec.proxy),
            center=proxy_center(spec.proxy))
    request = Request(ws, forget_ids, list(earlier), spec.seed + index, scores, groups,
                      spec.proxy if groups is not None else None)
    return request, info
