"""The SVC MIA fits one weighted row per distinct (feature, label) pair: same predictions as the plain fit.

Every comparison is against `SVC(C=3, gamma="auto").fit(x, labels)` on the unmerged rows, fit here in the test.
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.svm import SVC

from unlearn_core.metrics import _fit_merged_svc, _merge_rows, mia_features, svc_mia

# libsvm stops at a KKT violation of 1e-3 and the merged fit takes another path (measured ≤ 3e-3 apart here).
DECISION_ATOL = 1e-2


def plain_fit(x, labels):
    return SVC(C=3, gamma="auto", kernel="rbf").fit(x, labels)


def assert_same_attack(x, labels, target):
    ref = plain_fit(x, labels)
    merged = _fit_merged_svc(x, labels)
    want = ref.decision_function(target)
    np.testing.assert_allclose(merged.decision_function(target), want, rtol=0, atol=DECISION_ATOL)
    decided = np.abs(want) > DECISION_ATOL  # the sign of a value within the solver's tolerance of 0 is noise
    np.testing.assert_array_equal(merged.predict(target)[decided], ref.predict(target)[decided])
    return len(_merge_rows(x, labels)[0])


def shuffled(member, nonmember, seed=0):
    """Rows and labels (member = 1) in a seeded order, as `svc_mia` feeds them."""
    x = np.concatenate([member, nonmember])[:, None]
    labels = np.concatenate([np.ones(len(member), np.int64), np.zeros(len(nonmember), np.int64)])
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order], labels[order]


TARGET = np.linspace(-0.2, 1.2, 301)[:, None]


def test_random_continuous_data():
    rng = np.random.default_rng(14)
    x, labels = shuffled(rng.beta(5, 1, 800), rng.beta(2, 1, 800))
    assert assert_same_attack(x, labels, TARGET) == len(x)  # nothing repeats: the merged fit is the plain one


@pytest.mark.parametrize("levels", [3, 20, 200])
def test_heavily_tied_data(levels):
    rng = np.random.default_rng(levels)
    member = np.round(rng.beta(5, 1, 1000) * (levels - 1)) / (levels - 1)
    nonmember = np.round(rng.beta(2, 1, 1000) * (levels - 1)) / (levels - 1)
    x, labels = shuffled(member, nonmember)
    assert assert_same_attack(x, labels, TARGET) <= 2 * levels  # it did merge


@pytest.mark.parametrize("case", ["members_identical", "members_equal_nonmembers", "one_value",
                                  "one_value_unbalanced"])
def test_degenerate_data(case):
    nonmember = np.random.default_rng(7).random(700)
    member = {
        "members_identical": np.full(700, 0.9),
        "members_equal_nonmembers": nonmember.copy(),
        "one_value": np.full(700, 0.5),
        "one_value_unbalanced": np.full(900, 0.5),
    }[case]
    if case.startswith("one_value"):
        nonmember = np.full(700, 0.5)
    assert_same_attack(*shuffled(member, nonmember), TARGET)


def test_merge_rows_keeps_labels_apart_and_first_occurrence_order():
    x = np.array([[0.5], [0.2], [0.5], [0.5], [0.2], [0.7]])
    labels = np.array([1, 0, 0, 1, 0, 1])
    xm, ym, weight = _merge_rows(x, labels)
    np.testing.assert_array_equal(xm[:, 0], [0.5, 0.2, 0.5, 0.7])
    np.testing.assert_array_equal(ym, [1, 0, 0, 1])
    np.testing.assert_array_equal(weight, [2, 2, 1, 1])


def test_svc_mia_scores_equal_the_plain_fit():
    """The public function against the old algorithm: features, seeded shuffle, plain fit, predict."""
    rng = np.random.default_rng(3)

    def probs(n, sharp):  # softmax outputs over 10 classes; rounded logits make many confidences repeat
        logits = np.round(rng.normal(size=(n, 10)) * sharp, 1)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True), logits.argmax(axis=1)

    (p_in, y_in), (p_out, y_out), (p_t, y_t) = probs(900, 3.0), probs(900, 1.5), probs(300, 2.0)
    attacks = ("correctness", "confidence", "entropy", "m_entropy", "prob")
    got = svc_mia(p_in, y_in, p_out, y_out, p_t, y_t, attacks=attacks, seed=5)
    f_in, f_out = mia_features(p_in, y_in, attacks=attacks), mia_features(p_out, y_out, attacks=attacks)
    f_t = mia_features(p_t, y_t, attacks=attacks)
    for a in attacks:
        x, labels = np.concatenate([f_in[a], f_out[a]]), np.r_[np.ones(900, np.int64), np.zeros(900, np.int64)]
        order = np.random.default_rng(5).permutation(len(x))
        want = 1.0 - plain_fit(x[order], labels[order]).predict(f_t[a]).mean()
        assert got[a] == pytest.approx(want, abs=1e-12), a
