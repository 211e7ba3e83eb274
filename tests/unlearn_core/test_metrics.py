"""Tests of unlearn_core.metrics with real torch and scikit-learn (no mocks)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.datasets import load_digits

from unlearn_core.errors import ConfigError
from unlearn_core.metrics import (
    ATTACKS,
    accuracy,
    evaluate,
    mean_ci,
    mia_features,
    model_mia,
    predict_probs,
    svc_mia,
    tow,
    tow_mia,
)


# --------------------------------------------------------------------------------------------------
# ToW / ToW-MIA
# --------------------------------------------------------------------------------------------------

U = {"forget_acc": 90.0, "retain_acc": 99.0, "test_acc": 92.5, "val_acc": 50.0, "mia": 0.30}
R = {"forget_acc": 85.0, "retain_acc": 100.0, "test_acc": 94.0, "val_acc": 93.0, "mia": 0.45}


def test_tow_of_a_record_against_itself_is_one():
    assert tow(U, U) == 1.0
    assert tow_mia(U, U) == 1.0


def test_tow_equals_hand_computation():
    # forget: 1 - |90 - 85|/100   = 0.95
    # retain: 1 - |99 - 100|/100  = 0.99
    # test:   1 - |92.5 - 94|/100 = 0.985
    # val is not part of the product (its 43-point gap must not matter).
    assert tow(U, R) == pytest.approx(0.95 * 0.99 * 0.985)
    assert tow(U, R) == pytest.approx(0.9263925)
    assert tow(U, R) == tow(R, U)


def test_tow_mia_equals_hand_computation():
    # mia:    1 - |0.30 - 0.45|   = 0.85  (a 0-1 fraction: not divided by 100)
    # retain: 0.99, test: 0.985 as above; forget accuracy is replaced by the MIA term.
    assert tow_mia(U, R) == pytest.approx(0.85 * 0.99 * 0.985)
    assert tow_mia(U, R) == pytest.approx(0.82887750)
    assert tow_mia(U, {**R, "forget_acc": 0.0}) == tow_mia(U, R)


def test_tow_missing_key_is_a_config_error():
    with pytest.raises(ConfigError, match="test_acc"):
        tow({"forget_acc": 1, "retain_acc": 1}, R)
    with pytest.raises(ConfigError, match="mia"):
        tow_mia({"forget_acc": 1, "retain_acc": 1, "test_acc": 1}, R)


# --------------------------------------------------------------------------------------------------
# mean_ci
# --------------------------------------------------------------------------------------------------

def test_mean_ci_matches_scipy_t_interval():
    values = [0.81, 0.77, 0.85, 0.79, 0.90]
    a = np.array(values)
    lo, hi = stats.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=a.std(ddof=1) / math.sqrt(len(a)))
    m, low, high = mean_ci(values)
    assert m == pytest.approx(a.mean())
    assert low == pytest.approx(lo) and high == pytest.approx(hi)
    # and a different confidence level
    lo90, hi90 = stats.t.interval(0.90, len(a) - 1, loc=a.mean(), scale=stats.sem(a))
    _, low90, high90 = mean_ci(np.array(values), confidence=0.90)
    assert (low90, high90) == pytest.approx((lo90, hi90))
    assert low < low90 < m < high90 < high


def test_mean_ci_single_value_and_degenerate_inputs():
    assert mean_ci([0.7]) == (0.7, 0.7, 0.7)  # one seed: no interval
    assert mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)  # zero spread: zero width, not NaN
    for bad in ([], [0.1, float("nan")], [float("inf")]):
        with pytest.raises(ConfigError):
            mean_ci(bad)
    with pytest.raises(ConfigError):
        mean_ci([0.1, 0.2], confidence=95)


# --------------------------------------------------------------------------------------------------
# MIA features
# --------------------------------------------------------------------------------------------------

def _m_entropy_direct(p_row: np.ndarray, label: int) -> float:
    """Song & Mittal's modified entropy of one example, written out term by term."""
    floor = 1e-30
    total = 0.0
    for i, p_i in enumerate(p_row):
        if i == label:
            total -= (1 - p_i) * math.log(max(p_i, floor))
        else:
            total -= p_i * math.log(max(1 - p_i, floor))
    return total


def _m_entropy_reference_bug(p: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The RUM / SalUn version, verbatim in substance: `[:, labels]` indexing and log p for log(1 − p)."""
    log_prob = torch.where(p > 0, p.log(), torch.tensor(1e-30).log())
    reverse_prob = 1 - p
    log_reverse_prob = torch.where(p > 0, p.log(), torch.tensor(1e-30).log())
    modified_probs = p.clone()
    modified_probs[:, labels] = reverse_prob[:, labels]
    modified_log_probs = log_reverse_prob.clone()
    modified_log_probs[:, labels] = log_prob[:, labels]
    return -torch.sum(modified_probs * modified_log_probs, dim=-1)


PROBS = np.array([
    [0.7, 0.2, 0.1],
    [0.1, 0.6, 0.3],
    [0.25, 0.25, 0.5],
    [1.0, 0.0, 0.0],   # p_y = 1 (label 0)
    [0.0, 1.0, 0.0],   # p_y = 0 (label 0) and a non-label p = 1
    [0.0, 0.0, 1.0],   # p_y = 1 (label 2)
])
LABELS = np.array([0, 1, 0, 0, 0, 2])


def test_modified_entropy_matches_direct_formula_and_is_finite():
    f = mia_features(torch.tensor(PROBS, dtype=torch.float32), torch.tensor(LABELS))
    got = f["m_entropy"]
    assert got.shape == (len(LABELS), 1)
    assert np.all(np.isfinite(got))
    want = [_m_entropy_direct(PROBS[i], LABELS[i]) for i in range(len(LABELS))]
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-6, atol=1e-6)
    assert got[3, 0] == 0.0 and got[5, 0] == 0.0  # confident and right: nothing to add
    # confident and wrong: the clamped logs, -log(1e-30) twice (label term and the p = 1 term)
    assert got[4, 0] == pytest.approx(-2 * math.log(1e-30))


def test_modified_entropy_does_not_reproduce_the_reference_bug():
    rows = slice(0, 3)  # no zero probabilities, so only the indexing / log choice can differ
    p, y = torch.tensor(PROBS[rows]), torch.tensor(LABELS[rows])
    buggy = _m_entropy_reference_bug(p, y).numpy()
    ours = mia_features(p, y)["m_entropy"][:, 0]
    want = [_m_entropy_direct(PROBS[i], LABELS[i]) for i in range(3)]
    np.testing.assert_allclose(ours, want, rtol=1e-9)
    assert np.all(np.abs(buggy - ours) > 1e-3), (buggy, ours)


def test_other_features():
    f = mia_features(PROBS, LABELS)
    assert set(f) == set(ATTACKS)
    np.testing.assert_array_equal(f["correctness"][:, 0], [1, 1, 0, 1, 0, 1])
    np.testing.assert_allclose(f["confidence"][:, 0], [0.7, 0.6, 0.25, 1.0, 0.0, 1.0])
    entropy = [-sum(q * math.log(q) for q in row if q > 0) for row in PROBS]
    np.testing.assert_allclose(f["entropy"][:, 0], entropy)
    np.testing.assert_array_equal(f["prob"], PROBS)
    assert all(v.ndim == 2 and len(v) == len(LABELS) for v in f.values())
    assert set(mia_features(PROBS, LABELS, attacks=("confidence",))) == {"confidence"}
    with pytest.raises(ConfigError, match="valid attacks"):
        mia_features(PROBS, LABELS, attacks=("loss",))


# --------------------------------------------------------------------------------------------------
# predict_probs / accuracy
# --------------------------------------------------------------------------------------------------

def _small_conv(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(4 * 8 * 8, 10),
    )


def test_predict_probs_restores_mode_and_rows_sum_to_one():
    model = _small_conv().train()
    x = torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    bn_mean = model[1].running_mean.clone()
    p = predict_probs(model, x, batch_size=16)
    assert model.training  # restored
    assert p.dtype == torch.float32 and p.shape == (50, 10)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(50))
    torch.testing.assert_close(model[1].running_mean, bn_mean)  # eval mode: BatchNorm stats untouched
    # eval mode means no dropout: deterministic and independent of the batch size
    torch.testing.assert_close(predict_probs(model, x, batch_size=1024), p)
    model.eval()
    predict_probs(model, x)
    assert not model.training
    # uint8 inputs are scaled to [0, 1] exactly as float inputs would be given
    torch.testing.assert_close(predict_probs(model, x.float() / 255), p)
    assert predict_probs(model, x[:0]).shape == (0, 10)


def test_accuracy_percent():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert accuracy(probs, torch.tensor([0, 1, 1, 1])) == 75.0
    assert accuracy(probs.numpy(), np.array([1, 0, 1, 0])) == 0.0
    with pytest.raises(ConfigError):
        accuracy(probs[:0], torch.tensor([], dtype=torch.long))


# --------------------------------------------------------------------------------------------------
# SVC MIA
# --------------------------------------------------------------------------------------------------

def _probs_with_confidence(conf: np.ndarray, labels: np.ndarray, n_classes: int = 10) -> np.ndarray:
    p = np.tile(((1 - conf) / (n_classes - 1))[:, None], (1, n_classes))
    p[np.arange(len(labels)), labels] = conf
    return p


def test_svc_mia_separable_synthetic():
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 10, n)
    member = _probs_with_confidence(rng.uniform(0.95, 1.0, n), y)
    nonmember = _probs_with_confidence(rng.uniform(0.1, 0.5, n), y)
    s_unseen = svc_mia(member, y, nonmember, y, nonmember[:50], y[:50], attacks=ATTACKS, seed=0)
    s_seen = svc_mia(member, y, nonmember, y, member[:50], y[:50], attacks=ATTACKS, seed=0)
    assert set(s_unseen) == set(ATTACKS)
    for a in ("confidence", "entropy", "m_entropy", "prob"):
        assert s_unseen[a] == 1.0 and s_seen[a] == 0.0, a
    assert all(isinstance(v, float) for v in s_seen.values())
    with pytest.raises(ConfigError):
        svc_mia(member, y, nonmember[:0], y[:0], member, y)


@pytest.fixture(scope="module")
def noisy_digits():
    """sklearn's digits as uint8 N×1×8×8, with fixed per-example pixel noise so a small net overfits
    (train 100 %, test ~65 %) and members and non-members have clearly different confidences."""
    d = load_digits()
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(d.target))
    img = d.images[perm] * (255 / 16) + rng.normal(0, 100, d.images.shape)
    x = torch.tensor(np.clip(np.rint(img), 0, 255).astype(np.uint8)[:, None])
    y = torch.tensor(d.target[perm].astype(np.int64))
    return x, y


def test_mia_separates_members_from_held_out_examples(noisy_digits):
    x, y = noisy_digits
    n_retain, n_forget, n_test = 400, 100, 300
    members = slice(0, n_retain + n_forget)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    xm, ym = x[members].float() / 255, y[members]
    for _ in range(300):  # full batch, no regularisation: memorise the members
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xm), ym).backward()
        opt.step()

    retain = (x[:n_retain], y[:n_retain])  # 400 > |test|: the shadow members are a 300-example sample
    member_forget = (x[n_retain:n_retain + n_forget], y[n_retain:n_retain + n_forget])
    start = n_retain + n_forget
    test = (x[start:start + n_test], y[start:start + n_test])
    heldout_forget = (x[start + n_test:start + n_test + n_forget], y[start + n_test:start + n_test + n_forget])

    seen = model_mia(model, *retain, *test, *member_forget, seed=0)
    unseen = model_mia(model, *retain, *test, *heldout_forget, seed=0)
    assert set(seen) == {"confidence"}
    assert 0.0 <= seen["confidence"] <= 1.0 and 0.0 <= unseen["confidence"] <= 1.0
    assert unseen["confidence"] - seen["confidence"] >= 0.2, (seen, unseen)
    assert model_mia(model, *retain, *test, *heldout_forget, seed=0) == unseen  # seeded: deterministic

    # evaluate() wires the same pieces together
    out = evaluate(model, {"retain": retain, "forget": heldout_forget, "test": test},
                   mia_sets={"retain": retain, "test": test, "forget": heldout_forget}, seed=0)
    assert out["retain_acc"] == 100.0
    assert out["test_acc"] < 90.0
    assert out["mia"] == out["mia_confidence"] == unseen["confidence"]
    assert set(evaluate(model, {"val": test}, seed=0)) == {"val_acc"}
