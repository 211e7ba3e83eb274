"""Metrics: accuracies, the SVC membership-inference attack (MIA), ToW, ToW-MIA and confidence intervals.

Follows the RUM code (its `SVC_MIA_forget_efficacy`, from Unlearn-Sparse, and its ToW / ToW-MIA), with two
deliberate differences, both documented where they live:

* the shadow "member" set is a seeded random sample of the retain set, not its lowest-index examples;
* the modified-entropy feature is the correct Song & Mittal formula (per-row true label, log(1 − p) for
  the other classes), not the reference's buggy one. It does not affect the reported `confidence` attack.

Split of work: `predict_probs` runs on the model's device (in the experiment's precision and memory format,
`numerics.Numerics`: bf16 + channels_last by default on CUDA); everything after it
(`mia_features`, `svc_mia`) is numpy / scikit-learn on the CPU, so a caller may run the SVC in a thread
while the GPU goes on (scikit-learn's libsvm wrapper releases the GIL while it fits).

Never imports ray or optuna.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import torch
from scipy import stats
from sklearn.svm import SVC

from .errors import ConfigError
from .numerics import Numerics

# The five attacks of the reference, in its order. `confidence` is the one reported as `mia` (RUM's ToW-MIA uses it).
ATTACKS: tuple[str, ...] = ("correctness", "confidence", "entropy", "m_entropy", "prob")
REPORTED_ATTACK = "confidence"

# Keys of a metrics record that ToW / ToW-MIA read (accuracies in percent, mia as a 0–1 fraction).
ACC_KEYS: tuple[str, ...] = ("forget_acc", "retain_acc", "test_acc")

_LOG_FLOOR = 1e-30  # probabilities are clamped here before log, as in the reference: no -inf, no NaN


# --------------------------------------------------------------------------------------------------
# Predictions and accuracy
# --------------------------------------------------------------------------------------------------

def predict_probs(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int = 1024,
                  log: bool = False, numerics: Optional[Numerics] = None) -> torch.Tensor:
    """Softmax outputs (float32, N×classes, on x's device) of `model` in eval mode.

    `x` is a uint8 N×C×H×W tensor (converted to [0, 1] floats one batch at a time, so the whole set
    never exists as float32); float inputs are used as they are. The forward runs in `numerics`' precision
    and memory format (None: the defaults of x's device, bf16 + channels_last on CUDA). The model's previous
    train/eval mode is restored afterwards.
    The result is made under `torch.inference_mode()`: read it, do not update it in place or backprop.
    With `log`, log-softmax instead: finite where a probability underflows to 0 (entropies, KLs).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    numerics = numerics or Numerics.resolve(x.device)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode(), numerics.autocast():
            # At least one forward, so an empty set still yields an N×classes (0×classes) tensor.
            for i in range(0, max(len(x), 1), batch_size):
                # Softmax in float32: bf16 probabilities would be too coarse for the MIA features.
                logits = model(numerics.input(x[i:i + batch_size])).float()
                out.append(torch.log_softmax(logits, dim=1) if log else torch.softmax(logits, dim=1))
    finally:
        model.train(was_training)
    return torch.cat(out) if len(out) > 1 else out[0]


def accuracy(probs: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Top-1 accuracy in percent (0–100); one device sync at the end."""
    probs = torch.as_tensor(probs)
    y = torch.as_tensor(y, device=probs.device)
    if len(y) == 0:
        raise ConfigError("accuracy of an empty set is undefined")
    if len(y) != len(probs):
        raise ConfigError(f"{len(probs)} predictions but {len(y)} labels")
    return float((probs.argmax(dim=1) == y).float().mean().item() * 100.0)


# --------------------------------------------------------------------------------------------------
# Membership-inference attack
# --------------------------------------------------------------------------------------------------

def _as_numpy(a, dtype) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def _check_attacks(attacks: Iterable[str]) -> tuple[str, ...]:
    attacks = tuple(attacks)
    bad = [a for a in attacks if a not in ATTACKS]
    if bad or not attacks:
        raise ConfigError(f"unknown MIA attack(s) {bad or attacks!r}; valid attacks: {', '.join(ATTACKS)}")
    return attacks


def mia_features(probs, y, *, attacks: Iterable[str] = ATTACKS) -> dict[str, np.ndarray]:
    """The reference's five attack features, as float64 numpy arrays (1-D features shaped N×1).

    - `correctness`: 1 if the top-1 prediction is the label, else 0;
    - `confidence`: p(true label);
    - `entropy`: −Σ p log p (0 log 0 = 0);
    - `m_entropy`: modified entropy (Song & Mittal 2021),
      −(1 − p_y) log p_y − Σ_{i≠y} p_i log(1 − p_i), with probabilities clamped at 1e-30 before the log.
      The reference (RUM, SalUn) indexes `[:, labels]` — every row gets the columns of *all* labels in
      the batch — and takes log p where it should take log(1 − p) (fixed upstream in
      Unlearn-Sparse PR #14). This is the fixed formula.
    - `prob`: the full probability vector (N×classes).

    Only the features named in `attacks` are computed.
    """
    attacks = _check_attacks(attacks)
    p = _as_numpy(probs, np.float64)
    y = _as_numpy(y, np.int64)
    if p.ndim != 2 or len(p) != len(y):
        raise ConfigError(f"probs must be N×classes with one label per row; got {p.shape} and {y.shape}")
    rows = np.arange(len(y))
    feats: dict[str, np.ndarray] = {}
    if "correctness" in attacks:
        feats["correctness"] = (p.argmax(axis=1) == y).astype(np.float64)[:, None]
    if "confidence" in attacks:
        feats["confidence"] = p[rows, y][:, None]
    if "entropy" in attacks:
        feats["entropy"] = -(p * np.log(np.maximum(p, _LOG_FLOOR))).sum(axis=1)[:, None]
    if "m_entropy" in attacks:
        terms = p * np.log(np.maximum(1.0 - p, _LOG_FLOOR))  # i ≠ y: p_i log(1 − p_i)
        p_y = p[rows, y]
        terms[rows, y] = (1.0 - p_y) * np.log(np.maximum(p_y, _LOG_FLOOR))  # i = y: (1 − p_y) log p_y
        feats["m_entropy"] = -terms.sum(axis=1)[:, None]
    if "prob" in attacks:
        feats["prob"] = p
    return feats


def _predict_unique(clf: SVC, x: np.ndarray) -> np.ndarray:
    """`clf.predict(x)` evaluated once per distinct row: the same result, fewer kernel sums.

    Confidences from bf16 logits take few distinct values, and a well-trained model's are mostly ~1.0.
    """
    uniq, inverse = np.unique(x, axis=0, return_inverse=True)
    return clf.predict(uniq)[inverse.reshape(-1)]


def _merge_rows(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (feature row, label) pairs of `x`, `labels` and how often each occurs, in order of first occurrence.

    First-occurrence order keeps the caller's seeded shuffle meaningful (and equals it when nothing repeats).
    """
    rows = np.column_stack([x, labels])  # labels 0/1 are exact in float64
    uniq, first, counts = np.unique(rows, axis=0, return_index=True, return_counts=True)
    keep = np.argsort(first, kind="stable")
    return uniq[keep, :-1], uniq[keep, -1].astype(np.int64), counts[keep].astype(np.float64)


def _fit_merged_svc(x: np.ndarray, labels: np.ndarray) -> SVC:
    """The attack's `SVC(C=3, gamma="auto")` fit on `x`, `labels` with repeated rows merged into one weighted row.

    Exact: libsvm bounds each row's dual variable by C · sample_weight, so k identical rows (whose dual
    variables only enter the problem through their sum) and one row of weight k have the same optimum, hence
    the same decision function. gamma="auto" is 1 / n_features, which merging does not change.
    """
    xm, ym, weight = _merge_rows(x, labels)
    # Default kernel cache (200 MB): for 1-D features a kernel value is one exp, and a larger cache
    # measured slower (16 s vs 6 s fit at 10k + 10k unmerged), not faster.
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    return clf.fit(xm, ym, sample_weight=weight)


def svc_mia(probs_shadow_in, y_in, probs_shadow_out, y_out, probs_target, y_target, *,
            attacks: Iterable[str] = (REPORTED_ATTACK,), seed: int = 0) -> dict[str, float]:
    """Per attack: the fraction (0–1) of the target set an SVC classifies as NON-member.

    For each attack an `SVC(C=3, gamma="auto", kernel="rbf")` (no feature scaling, as the reference) is
    fit on the shadow members (label 1) and non-members (label 0), and predicts the target; the score
    is 1 − mean prediction. Higher means the target looks unseen.

    The shadow data are shuffled with a seeded RNG before fitting, as RUM does (RUM's shuffle is
    unseeded; here it is reproducible). Inputs may be torch tensors (any device) or numpy arrays.

    Cost: one fit and one predict per attack, each over *distinct* rows only: repeated (feature, label) rows
    are fit once with their count as sample weight (`_fit_merged_svc`, the same SVC) and the target is
    predicted once per distinct value. Confidences repeat when a model saturates them (p = 1.0 in float32);
    where they do not (a weakly trained model), a fit still costs ~6 s of one core at 10k + 10k shadow
    points (benchmarks/mia_cost.py; BENCHMARKS.md, "SVC MIA: CPU cost per evaluation").
    """
    attacks = _check_attacks(attacks)
    n_in, n_out, n_target = len(y_in), len(y_out), len(y_target)
    if n_in == 0 or n_out == 0:
        raise ConfigError(f"the SVC MIA needs shadow members and non-members; got {n_in} and {n_out}")
    if n_target == 0:
        raise ConfigError("the SVC MIA needs a non-empty target (forget) set")
    f_in = mia_features(probs_shadow_in, y_in, attacks=attacks)
    f_out = mia_features(probs_shadow_out, y_out, attacks=attacks)
    f_target = mia_features(probs_target, y_target, attacks=attacks)
    labels = np.concatenate([np.ones(n_in, dtype=np.int64), np.zeros(n_out, dtype=np.int64)])
    order = np.random.default_rng(seed).permutation(n_in + n_out)
    scores = {}
    for a in attacks:
        clf = _fit_merged_svc(np.concatenate([f_in[a], f_out[a]])[order], labels[order])
        scores[a] = float(1.0 - _predict_unique(clf, f_target[a]).mean())
    return scores


def model_mia(model: torch.nn.Module, retain_x: torch.Tensor, retain_y, test_x: torch.Tensor, test_y,
              forget_x: torch.Tensor, forget_y, *, seed: int,
              attacks: Iterable[str] = (REPORTED_ATTACK,), batch_size: int = 1024,
              numerics: Optional[Numerics] = None) -> dict[str, float]:
    """The project's SVC MIA on the forget set: attack name → non-member fraction (0–1); the predictions in
    `numerics` (see `predict_probs`).

    Shadow members are a **seeded random sample of |test| retain examples** (all of the retain set when
    it is smaller than the test set); non-members are the test set; the target is the forget set. The
    `confidence` entry is the one reported as `mia` and used by ToW-MIA.

    Deviation from the reference: RUM takes the first |test| entries of a Python set of retain indices,
    i.e. in practice the lowest-index retain examples — a sample that depends on how the data are
    ordered. A seeded uniform sample is what the attack means. Use the same `seed` for the unlearned and
    the retrained model so that both are scored against the same shadow sample.
    """
    pick = shadow_members(len(retain_y), len(test_y), seed)
    if pick is not None:
        pick_t = torch.as_tensor(pick, device=retain_x.device)
        shadow_x = retain_x[pick_t]
        shadow_y = retain_y[pick_t] if isinstance(retain_y, torch.Tensor) else np.asarray(retain_y)[pick]
    else:
        shadow_x, shadow_y = retain_x, retain_y
    def predict(x: torch.Tensor) -> torch.Tensor:
        return predict_probs(model, x, batch_size=batch_size, numerics=numerics)

    return svc_mia(
        predict(shadow_x), shadow_y,
        predict(test_x), test_y,
        predict(forget_x), forget_y,
        attacks=attacks, seed=seed,
    )


def shadow_members(n_retain: int, n_test: int, seed: int) -> np.ndarray | None:
    """Sorted positions of the |test| retain examples used as shadow members (None: use the whole retain set)."""
    if n_retain <= n_test:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_retain, size=n_test, replace=False))


# --------------------------------------------------------------------------------------------------
# ToW, ToW-MIA, aggregation
# --------------------------------------------------------------------------------------------------

def _get(record: Mapping, key: str) -> float:
    try:
        return float(record[key])
    except KeyError:
        raise ConfigError(f"metrics record has no {key!r} (has: {', '.join(map(str, record))})") from None


def tow(u: Mapping, r: Mapping, *, held_out: str = "test_acc") -> float:
    """Tug-of-War (the RUM paper's): Π over forget/retain/test of (1 − |A(u) − A(r)|/100).

    `u` is the unlearned model's record, `r` the retrained-from-scratch model's; accuracies in percent.
    `held_out="val_acc"` puts the validation accuracy in the test term: the selection view, which a search
    may read without ever scoring on the test split.
    """
    out = 1.0
    for k in ("forget_acc", "retain_acc", held_out):
        out *= 1.0 - abs(_get(u, k) - _get(r, k)) / 100.0
    return out


def tow_mia(u: Mapping, r: Mapping, *, held_out: str = "test_acc", mia: str = "mia") -> float:
    """ToW-MIA (the RUM paper's): ToW with the forget-accuracy term replaced by (1 − |MIA(u) − MIA(r)|).

    `mia` is the `confidence` attack's 0–1 fraction (not divided by 100); `r`'s is the retrained model's
    own MIA score on the same forget set. `held_out` / `mia` name the keys of another view (see `tow`).
    """
    out = 1.0 - abs(_get(u, mia) - _get(r, mia))
    for k in ("retain_acc", held_out):
        out *= 1.0 - abs(_get(u, k) - _get(r, k)) / 100.0
    return out


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its Student-t confidence interval (n − 1 degrees of freedom).

    One value has no interval: it is returned as (v, v, v). Identical values give a zero-width interval.
    Non-finite values are refused (filter failed runs first) so the result never holds NaN.
    """
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ConfigError("mean_ci of no values")
    if not np.all(np.isfinite(v)):
        raise ConfigError(f"mean_ci got non-finite values: {v.tolist()}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    m = float(v.mean())
    if v.size == 1:
        return m, m, m
    sem = float(v.std(ddof=1)) / math.sqrt(v.size)
    half = sem * float(stats.t.ppf((1.0 + confidence) / 2.0, df=v.size - 1))
    return m, m - half, m + half


# --------------------------------------------------------------------------------------------------
# Convenience
# --------------------------------------------------------------------------------------------------

def evaluate(model: torch.nn.Module, splits: Mapping[str, tuple], *, mia_sets: Mapping[str, tuple] | None = None,
             seed: int, attacks: Iterable[str] = (REPORTED_ATTACK,), batch_size: int = 1024,
             cache: dict | None = None, numerics: Optional[Numerics] = None) -> dict[str, float]:
    """Accuracy of every named split (`{"forget": (x, y), ...}` → `forget_acc`, ...) and, when `mia_sets`
    (keys `retain`, `test` — the non-members —, `forget`, each (x, y)) are given, `mia` (the `confidence`
    attack) plus `mia_<attack>` for every attack in `attacks`. `cache` (a dict the caller keeps) lets several
    calls on the same model and the same image tensors predict each of them once. Predictions are made in
    `numerics` (see `predict_probs`).
    """
    out: dict[str, float] = {}
    probs: dict[int, torch.Tensor] = {} if cache is None else cache  # by id of the images: predicted once

    def predict(x: torch.Tensor) -> torch.Tensor:
        if id(x) not in probs:
            probs[id(x)] = predict_probs(model, x, batch_size=batch_size, numerics=numerics)
        return probs[id(x)]

    for name, (x, y) in splits.items():
        out[f"{name}_acc"] = accuracy(predict(x), y)
    if mia_sets is not None:
        missing = {"retain", "test", "forget"} - set(mia_sets)
        if missing:
            raise ConfigError(f"mia_sets lacks {sorted(missing)}; it needs retain, test and forget")
        attacks = tuple(dict.fromkeys((REPORTED_ATTACK, *attacks)))  # `mia` always needs confidence
        (rx, ry), (tx, ty), (fx, fy) = mia_sets["retain"], mia_sets["test"], mia_sets["forget"]
        # The same shadow sample as `model_mia`, taken from the retain predictions already made.
        pick = shadow_members(len(ry), len(ty), seed)
        p_in, y_in = predict(rx), ry
        if pick is not None:
            pick_t = torch.as_tensor(pick, device=p_in.device)
            p_in = p_in[pick_t]
            y_in = ry[pick_t.to(ry.device)] if isinstance(ry, torch.Tensor) else np.asarray(ry)[pick]
        scores = svc_mia(p_in, y_in, predict(tx), ty, predict(fx), fy, attacks=attacks, seed=seed)
        out["mia"] = scores[REPORTED_ATTACK]
        out.update({f"mia_{a}": s for a, s in scores.items()})
    return out
