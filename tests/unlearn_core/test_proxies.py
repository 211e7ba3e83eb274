"""Memorization proxies on real digits models: shape, direction, caching, and noisy labels ranked as memorized."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from unlearn_core.batching import DeviceData
from unlearn_core.data import load_dataset
from unlearn_core.errors import ConfigError
from unlearn_core.metrics import predict_probs
from unlearn_core.proxies import (PROXIES, HoldoutConfig, holdout_finetune, memorization,
                                  symmetric_kl)
from unlearn_core.references import original
from unlearn_core.spec import ExperimentSpec
from unlearn_core.workspace import Workspace

SPEC = dict(dataset="digits", width=0.125, train_epochs=6, device="cpu")
EVENT_PROXIES = {"confidence": "confidence", "max_conf": "max_conf", "entropy": "neg_entropy", "bin_acc": "correct"}


@pytest.fixture(scope="module")
def ws(shared_store):
    w = Workspace(ExperimentSpec(**SPEC, store=str(shared_store)))
    original(w)
    return w


@pytest.fixture(scope="module")
def noisy(shared_store):
    """digits with the labels of 5 % of the training examples flipped to another class; (workspace, noisy ids).

    Augmentation is off for this original: with random crops the 0.125-width model fits none of the flipped
    labels in 6 epochs (so there is nothing memorized for hold-out retraining to find); without, it fits
    about a quarter of them.
    """
    ds = load_dataset("digits")
    rng = np.random.default_rng(0)
    n = len(ds.train)
    ids = np.sort(rng.choice(n, size=round(0.05 * n), replace=False))
    y = ds.train.y.copy()  # read-only array: copy
    y[ids] = (y[ids] + rng.integers(1, ds.num_classes, size=len(ids))) % ds.num_classes
    data = dataclasses.replace(ds, train=dataclasses.replace(ds.train, y=y))
    assert (data.train.y[ids] != ds.train.y[ids]).all()
    w = Workspace(ExperimentSpec(**SPEC, store=str(shared_store)), dataset=data)
    w.recipe = dataclasses.replace(w.recipe, augment=False)  # part of every artifact key
    return w, ids


def _rank_fraction(scores: np.ndarray) -> np.ndarray:
    """0 = the most memorized example, → 1 = the least."""
    return np.argsort(np.argsort(-scores, kind="stable"), kind="stable") / len(scores)


@pytest.mark.parametrize("name", sorted(PROXIES.names()))
def test_every_proxy_gives_one_finite_score_per_training_example(ws, name):
    s, info = memorization(ws, name, return_info=True)
    assert s.shape == (len(ws.train),) and s.dtype == np.float64
    assert np.isfinite(s).all()
    assert info["model"] == "original"
    assert len(np.unique(s)) > 1  # a score, not a constant


@pytest.mark.parametrize("name, event", sorted(EVENT_PROXIES.items()))
def test_learning_event_proxies_are_the_negated_recorded_events(ws, name, event):
    _, art = original(ws)
    s, info = memorization(ws, name, return_info=True)
    assert np.array_equal(s, -art["events"][event].double().numpy())
    assert info["source"] == "recorded training events"


def test_proxies_on_a_given_model_use_one_eval_pass(ws):
    """The sequential extension: confidence / bin_acc of the model's own eval-mode predictions. (Since issue #13
    that is the `*_current` variants; `confidence` and `bin_acc` ignore the model: the recorded events.)"""
    model, _ = original(ws)
    probs = predict_probs(model, ws.train.x).double().numpy()
    y = ws.data.train.y
    conf = memorization(ws, "confidence_current", model=model)
    np.testing.assert_allclose(conf, -probs[np.arange(len(y)), y], rtol=1e-5, atol=1e-7)
    assert np.array_equal(memorization(ws, "bin_acc_current", model=model), -(probs.argmax(1) == y).astype(float))
    # ... which is not the recorded training-time average (a different source, cached under its own key)
    assert not np.allclose(conf, memorization(ws, "confidence"))
    assert np.array_equal(memorization(ws, "confidence", model=model), memorization(ws, "confidence"))


def test_holdout_on_a_given_model_equals_the_original_path(ws):
    """Hold-out retraining of the original passed in explicitly (keyed by its weights) gives the same scores."""
    model, _ = original(ws)
    s, info = memorization(ws, "holdout", model=copy.deepcopy(model), return_info=True)
    assert info["model"].startswith("weights:") and info["built"]
    assert np.array_equal(s, memorization(ws, "holdout"))


def test_entropy_is_finite_where_probabilities_underflow(ws):
    model, _ = original(ws)
    hot = copy.deepcopy(model)
    last = [m for m in hot.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(1e4)
        last.bias.mul_(1e4)
    p = predict_probs(hot, ws.train.x)
    assert (p == 0).any()  # the situation where the reference's Σ p log p is NaN
    assert torch.isnan((p * p.log()).sum(1)).any()
    s = memorization(ws, "entropy", model=hot)
    assert np.isfinite(s).all() and (s >= -1e-6).all()  # memorization level = entropy >= 0


def test_symmetric_kl():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    q = torch.tensor([[0.1, 0.3, 0.6], [0.5, 0.5, 0.0]])
    logp, logq = p.clamp_min(1e-45).log(), q.clamp_min(1e-45).log()
    kl = symmetric_kl(logp, logq)
    pq = (p[0] * (p[0] / q[0]).log()).sum()
    qp = (q[0] * (q[0] / p[0]).log()).sum()
    assert kl[0].item() == pytest.approx(0.5 * (pq + qp).item(), rel=1e-5)
    assert kl[1].item() == 0.0
    assert torch.equal(kl, symmetric_kl(logq, logp))


class _Constant(torch.nn.Module):
    """Logits that no parameter changes: the loss never improves."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))

    def forward(self, x):
        return torch.zeros(len(x), 3) + 0.0 * self.w.sum()


@pytest.mark.parametrize("patience, expected", [(4, 5), (2, 3)])
def test_holdout_finetuning_stops_after_patience_epochs_without_improvement(patience, expected):
    data = DeviceData.from_arrays(np.zeros((10, 1, 4, 4), np.uint8), np.arange(10) % 3, "cpu")
    _, epochs = holdout_finetune(_Constant(), data, HoldoutConfig(patience=patience), batch_size=4)
    assert epochs == expected  # 1 epoch sets the best loss, then `patience` without improvement


def test_scores_are_cached_in_the_store(ws):
    s1, i1 = memorization(ws, "holdout", return_info=True)  # built by an earlier test or now
    s2, i2 = memorization(ws, "holdout", return_info=True)
    assert not i2["built"] and i2["seconds"] == 0.0
    assert np.array_equal(s1, s2)
    s2[0] = 123.0  # a copy: the caller may write to it
    assert memorization(ws, "holdout")[0] != 123.0
    assert list((ws.store.fs.ls(f"{ws.store._base}/proxy")))


def test_noisy_labels_rank_as_memorized(noisy):
    ws, ids = noisy
    clean = np.setdiff1d(np.arange(len(ws.train)), ids)
    for name in ("confidence", "holdout"):
        s = memorization(ws, name)
        rank = _rank_fraction(s)
        assert rank[ids].mean() < 1 / 3, name  # noisy examples in the top third on average
        assert s[ids].mean() > s[clean].mean(), name


def test_bad_inputs(ws):
    # (issue #13 added the *_current variants to the list of valid names)
    with pytest.raises(ConfigError, match="unknown proxy 'loss'.*valid proxys: bin_acc, bin_acc_current, confidence"):
        memorization(ws, "loss")
    with pytest.raises(ConfigError, match="outside"):
        memorization(ws, "confidence", pool=np.array([0, len(ws.train)]))
    with pytest.raises(ConfigError, match="more than once"):
        memorization(ws, "confidence", pool=np.array([3, 3]))
