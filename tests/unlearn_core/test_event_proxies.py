"""Learning-event proxies at requests 2..k (issue #13 part 3).

`confidence`, `max_conf`, `entropy` and `bin_acc` rank every request of a run by the original model's recorded
training events (restricted to what remains of the pool; no extra pass), whatever model `ranking_model` names; the
`*_current` variants keep the other rule: one eval-mode pass of the current model from request 2 on. The
proxy info of each request says which source was used.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearn_core.forget import mix_groups
from unlearn_core.proxies import EVENTS_SOURCE, PASS_SOURCE, PROXIES, event_values, log_probs, memorization
from unlearn_core.run import start
from unlearn_core.spec import ExperimentSpec
from unlearn_core.workspace import Workspace

FT = {"epochs": 1, "lr": 0.02}


@pytest.fixture(scope="module")
def store(shared_store):
    return str(shared_store)


def _run(store, proxy, ranking_model="current"):
    spec = ExperimentSpec(width=0.125, train_epochs=2, forget="mix", forget_size=30, proxy=proxy, device="cpu",
                          store=store)
    seen = []
    ws = Workspace(spec)
    rec = start(spec, "finetune", FT, ws, requests=2, ranking_model=ranking_model,
                on_request=lambda r, model, req: seen.append((model, req))).run()
    return spec, ws, rec, seen


def test_the_registry_names_both_families():
    for name in ("confidence", "max_conf", "entropy", "bin_acc"):
        assert not PROXIES.get(name).follows_model
        cur = PROXIES.get(f"{name}_current")
        assert cur.follows_model and cur.event == PROXIES.get(name).event and cur.sign == PROXIES.get(name).sign
    assert PROXIES.get("holdout").follows_model and PROXIES.get("holdout_test").follows_model


@pytest.mark.parametrize("ranking_model", ["current", "retrain"])
def test_request_two_ranks_by_the_originals_events(store, ranking_model):
    spec, ws, rec, seen = _run(store, "confidence", ranking_model)
    events = memorization(ws, "confidence")  # the original's recorded events
    (_, first), (_, second) = seen
    for r, req in zip(rec["requests"], (first, second)):
        info = r["proxies"]["confidence"]
        assert info["source"] == EVENTS_SOURCE and info["model"] == "original" and not info["follows_model"]
        assert np.array_equal(req.scores["confidence"], events)
    pool = np.setdiff1d(np.arange(len(ws.train)), first.forget_ids)
    expected = mix_groups(events, 30, pool, seed=spec.seed + 1)  # the events restricted to the pool
    assert all(np.array_equal(a, b) for a, b in zip(second.groups, expected))
    assert np.intersect1d(second.forget_ids, first.forget_ids).size == 0


def test_the_current_variant_makes_one_eval_pass_of_the_current_model(store):
    spec, ws, rec, seen = _run(store, "confidence_current")
    (model1, first), (_, second) = seen
    info1, info2 = (r["proxies"]["confidence_current"] for r in rec["requests"])
    assert info1["source"] == EVENTS_SOURCE and info1["model"] == "original"
    assert info2["source"] == PASS_SOURCE and info2["model"].startswith("unlearned:") and info2["follows_model"]
    with torch.no_grad():
        expected = -event_values(log_probs(model1, ws.train), ws.train.y)["confidence"].double().cpu().numpy()
    got = second.scores["confidence_current"]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert not np.allclose(got, memorization(ws, "confidence"))  # not the recorded events
    # request 1 is the same as the learning-event proxy's
    np.testing.assert_array_equal(first.scores["confidence_current"], memorization(ws, "confidence"))
