"""The request in progress (`RequestState`): what a checkpoint holds of it, and that a run restored from one
mid-request goes on exactly as the run that was never interrupted (digits, a mix over two requests)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from unlearn_core.request_state import RequestState
from unlearn_core.run import start
from unlearn_core.spec import ExperimentSpec
from unlearn_core.workspace import Workspace

FT = {"epochs": 2, "lr": 0.02}
TIMINGS = {"unlearn_seconds", "proxy_seconds", "seconds", "proxies"}  # wall clock, and whether a cache was cold
# The checkpoint format of a request in progress: a checkpoint written before must still load.
SAVED_KEYS = {"forget_ids", "groups", "group_proxy", "scores", "proxy_info", "start_sha", "seconds", "history", "unl"}


@pytest.fixture(scope="module")
def ws(shared_store):
    spec = ExperimentSpec(width=0.125, train_epochs=2, forget="mix", forget_size=30, proxy="confidence_current",
                          device="cpu", store=str(shared_store))
    return Workspace(spec)


def _start(ws):
    return start(ws.spec, "finetune", FT, ws, requests=2, ranking_model="retrain", views=("selection", "report"),
                 evaluate_every_epoch=True)


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMINGS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _saved(obj):
    """`obj` after torch.save and a weights-only torch.load, as a trial's checkpoint gives it back."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.fixture(scope="module")
def uninterrupted(ws):
    run = _start(ws)
    return list(run.epochs()), run.record()


def _into_request_two(run):
    """The run's epoch iterator, stopped after the first epoch of request 2, and the rows so far."""
    it = run.epochs()
    head = [next(it) for _ in range(FT["epochs"] + 1)]
    assert head[-1]["request"] == 2 and head[-1]["request_epoch"] == 1 and run.current is not None
    return it, head


def test_a_request_state_round_trips_through_a_weights_only_checkpoint(ws):
    run = _start(ws)
    it, _ = _into_request_two(run)
    state = run.current
    saved = _saved(state.to_dict())
    assert set(saved) == SAVED_KEYS
    back = RequestState.from_dict(saved, ws, run.method, run.earlier, seed=ws.spec.seed + 1, views=run.views)
    a, b = state.request, back.request
    assert np.array_equal(a.forget_ids, b.forget_ids) and a.seed == b.seed == ws.spec.seed + 1
    assert a.group_proxy == b.group_proxy == "confidence_current"
    assert all(np.array_equal(x, y) for x, y in zip(a.groups, b.groups, strict=True))
    assert all(np.array_equal(x, y) for x, y in zip(a.earlier, b.earlier, strict=True))
    assert a.scores.keys() == b.scores.keys() and all(np.array_equal(a.scores[k], b.scores[k]) for k in a.scores)
    assert (back.start_sha, back.proxy_info, back.seconds, back.history) == \
        (state.start_sha, state.proxy_info, state.seconds, state.history)
    assert back.reference == state.reference  # read back from the store
    # the unlearner goes on where it stood: the same next epoch, the same weights
    assert back.unl.next_epoch() == state.unl.next_epoch()
    for (k, x), y in zip(state.unl.model.state_dict().items(), back.unl.model.state_dict().values(), strict=True):
        assert torch.equal(x, y), k
    it.close()


def test_a_run_restored_mid_request_continues_as_the_uninterrupted_run(ws, uninterrupted):
    rows_full, rec_full = uninterrupted
    run = _start(ws)
    it, head = _into_request_two(run)
    saved = _saved(run.state_dict())
    it.close()
    fresh = _start(ws)
    fresh.load_state_dict(saved)
    tail = list(fresh.epochs())
    assert _strip(head + tail) == _strip(rows_full)
    assert _strip(fresh.record()) == _strip(rec_full)
    assert rec_full["ranking_model"] == "retrain" and len(rec_full["requests"]) == 2
