"""Forget sets by example id (an id is a position in `Dataset.train`).

Every ranking follows the RUM code's fixed-count rule (`main_forget.py`): rank by score and take counts, not
percentile thresholds. Every selector returns a sorted int64 array of distinct ids and raises
ConfigError, with the numbers, when its input cannot give what was asked.

Scores are memorization levels, one per training example (high = more memorized). Callers convert proxies
first (e.g. confidence, where high means *less* memorized).

Ties are broken by a seeded random order, never by id: every ranking (`by_score`, `mix_groups`, `mix`, and
`rum.split_by_score`) sorts by score first and by `tie_order(len(scores), seed)` second (`np.lexsort`). That
order is a random rank of every id, so it is the same whatever the pool, and the same seed always gives the
same groups. The RUM code sorts stably, so its tied examples form id blocks (at one end the lowest ids, at
the other the highest); with a proxy of few distinct values (`bin_acc` is a mean of 0/1 over the
training epochs) ties decide most of a group, which would make the groups contiguous id runs, the same for
every seed.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

from .errors import ConfigError

Which = Literal["top", "bottom", "median"]
WHICH = ("top", "bottom", "median")


# ------------------------------------------------------------------------------------------- validation

def _int_array(a, what: str) -> np.ndarray:
    """`a` as a 1-D int64 array; an empty list (numpy makes it float) counts as integers."""
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ConfigError(f"{what} must be a 1-D array of ids, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise ConfigError(f"{what} must be integer ids, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_count(n, available: int, what: str, minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not minimum <= n <= available:
        raise ConfigError(f"{what}: n must be an integer in [{minimum}, {available}] (the pool has {available} "
                          f"examples), got n={n!r}")
    return int(n)


def _check_range(ids: np.ndarray, n_train: int, what: str) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= n_train):
        bad = int(((ids < 0) | (ids >= n_train)).sum())
        raise ConfigError(f"{what}: ids must lie in [0, {n_train}), got {bad} outside "
                          f"(min {ids.min()}, max {ids.max()})")


def _check_unique(ids: np.ndarray, what: str) -> None:
    values, counts = np.unique(ids, return_counts=True)
    if len(values) != len(ids):
        dup = values[counts > 1]
        raise ConfigError(f"{what}: {len(dup)} ids appear more than once, e.g. {dup[:5].tolist()}")


def validate_ids(ids, n_train: int) -> np.ndarray:
    """Check that `ids` is a non-empty set of distinct ids in [0, n_train); return them sorted, int64."""
    arr = _int_array(ids, "ids")
    if arr.size == 0:
        raise ConfigError(f"ids: empty; expected at least one id in [0, {n_train})")
    _check_range(arr, n_train, "ids")
    _check_unique(arr, "ids")
    return np.sort(arr)


def _pool(pool, n_total: int) -> np.ndarray:
    """The candidate ids: all of [0, n_total) when `pool` is None, else `pool` validated and sorted."""
    if pool is None:
        if n_total <= 0:
            raise ConfigError("empty pool: there are no examples to select from")
        return np.arange(n_total, dtype=np.int64)
    try:
        return validate_ids(pool, n_total)
    except ConfigError as e:
        raise ConfigError(f"pool {e}") from None


def tie_order(n_total: int, seed) -> np.ndarray:
    """A random rank of every id in [0, n_total) from `np.random.default_rng(seed)`: the secondary sort key
    that breaks score ties in every ranking (seeded, so the same seed gives the same order)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed (it orders tied scores) must be an integer >= 0, got {seed!r}")
    return np.random.default_rng(int(seed)).permutation(int(n_total))


def _scores(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ConfigError(f"scores must be a non-empty 1-D array (one per training example), got shape {s.shape}")
    return s


# -------------------------------------------------------------------------------------------- selectors

def random_forget(pool: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n ids drawn uniformly without replacement from `pool` with `RandomState(seed)` (random forgetting)."""
    ids = _int_array(pool, "pool")
    if ids.size == 0:
        raise ConfigError("random_forget: the pool is empty")
    _check_range(ids, np.iinfo(np.int64).max, "pool")
    _check_unique(ids, "pool")
    n = _check_count(n, len(ids), "random_forget")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ConfigError(f"random_forget: seed must be an integer in [0, 2**32), got {seed!r}")
    chosen = np.random.RandomState(int(seed)).choice(np.sort(ids), n, replace=False)
    return np.sort(chosen)


def class_forget(labels: np.ndarray, classes: Sequence[int], pool: np.ndarray | None = None) -> np.ndarray:
    """All ids (within `pool`, default all) whose label is in `classes`: class removal."""
    y = _int_array(labels, "labels")
    ids = _pool(pool, len(y))
    wanted = _int_array(list(classes) if not isinstance(classes, np.ndarray) else classes, "classes")
    if wanted.size == 0:
        raise ConfigError("class_forget: no classes given")
    _check_unique(wanted, "classes")
    present = np.unique(y[ids])
    absent = np.setdiff1d(wanted, present)
    if absent.size:
        raise ConfigError(f"class_forget: class(es) {absent.tolist()} have no examples in the pool; "
                          f"classes present: {_describe(present)}")
    return ids[np.isin(y[ids], wanted)]


def _describe(values: np.ndarray) -> str:
    """Compact list of class labels: '0..9' when contiguous."""
    if len(values) > 3 and values[-1] - values[0] == len(values) - 1:
        return f"{values[0]}..{values[-1]}"
    return ", ".join(map(str, values.tolist()))


def _ranking(s: np.ndarray, tie: np.ndarray, which: str, center: float | None) -> np.ndarray:
    """Positions into `s`, most wanted first, for `which`; tied scores in the order of `tie` (lowest first)."""
    if which == "top":
        return np.lexsort((tie, -s))
    if which == "bottom":
        return np.lexsort((tie, s))
    if which == "median":
        c = np.median(s) if center is None else float(center)
        return np.lexsort((tie, np.abs(s - c)))
    raise ConfigError(f"which must be one of {', '.join(WHICH)}, got {which!r}")


def _pool_scores(scores, pool, seed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pool ids, their scores, their tie-breaking ranks from `tie_order(len(scores), seed)`)."""
    s = _scores(scores)
    ids = _pool(pool, len(s))
    sp = s[ids]
    if not np.isfinite(sp).all():
        raise ConfigError(f"scores: {int((~np.isfinite(sp)).sum())} of the pool's {len(sp)} scores are NaN or inf")
    return ids, sp, tie_order(len(s), seed)[ids]


def by_score(scores: np.ndarray, n: int, which: Which, pool: np.ndarray | None = None, *, seed: int,
             center: float | None = None) -> np.ndarray:
    """The n ids of `pool` (default all) with the highest (`top`), lowest (`bottom`) or most central
    (`median`) scores; among tied scores, in the seeded random order `tie_order(len(scores), seed)`.

    Central means nearest the median of the pool's scores (the reference's rule for proxies), or nearest
    `center` when given (the reference uses 0.5 for true memorization scores).
    """
    ids, sp, tie = _pool_scores(scores, pool, seed)
    if which not in WHICH:
        raise ConfigError(f"which must be one of {', '.join(WHICH)}, got {which!r}")
    n = _check_count(n, len(ids), f"by_score({which!r})")
    return np.sort(ids[_ranking(sp, tie, which, center)[:n]])


def mix_groups(scores: np.ndarray, n: int, pool: np.ndarray | None = None, *, seed: int,
               center: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The "mix" forget set (the RUM code's) as its three groups (low, mid, high); RUM unlearns them in that order.

    Sizes: high = the n//3 highest scores, mid = the n//3 nearest the median of the pool's scores (or
    `center`), low = the rest, n − 2·(n//3), lowest (so when n is not a multiple of 3 the extra one or two
    examples go to low; the RUM code's lists then total fewer than n). Ties are broken by the seeded random order
    `tie_order(len(scores), seed)`, not by id. The groups are disjoint: high is taken first, then low, then mid
    from what is left, each group moving on to its next candidates, so the three hold exactly n distinct ids
    (the RUM code's lists are not de-duplicated and can repeat an example). They match the RUM code's groups
    only where no group overlaps another and no tie straddles a group's boundary (the RUM code keeps tied
    examples in id order).
    """
    ids, sp, tie = _pool_scores(scores, pool, seed)
    n = _check_count(n, len(ids), "mix", minimum=3)
    taken = np.zeros(len(ids), bool)

    def take(which: str, k: int) -> np.ndarray:
        order = _ranking(sp, tie, which, center)
        chosen = order[~taken[order]][:k]
        taken[chosen] = True
        return np.sort(ids[chosen])

    high = take("top", n // 3)
    low = take("bottom", n - 2 * (n // 3))
    mid = take("median", n // 3)
    return low, mid, high


def mix(scores: np.ndarray, n: int, pool: np.ndarray | None = None, *, seed: int,
        center: float | None = None) -> np.ndarray:
    """The "mix" forget set (the RUM code's): n//3 highest + n//3 nearest-median (or `center`) + the rest
    lowest, as n distinct ids, ties in a seeded random order (see `mix_groups`)."""
    return np.sort(np.concatenate(mix_groups(scores, n, pool, seed=seed, center=center)))


def retain_ids(n_train: int, *exclude: np.ndarray) -> np.ndarray:
    """All ids in [0, n_train) outside the union of the `exclude` sets (which may overlap)."""
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train <= 0:
        raise ConfigError(f"retain_ids: n_train must be a positive integer, got {n_train!r}")
    keep = np.ones(int(n_train), bool)
    for i, ids in enumerate(exclude):
        arr = _int_array(ids, f"exclude set {i}")
        _check_range(arr, n_train, f"exclude set {i}")
        keep[arr] = False
    if not keep.any():
        raise ConfigError(f"retain_ids: excluding {len(exclude)} id set(s) leaves none of the {n_train} "
                          f"training examples to retain")
    return np.flatnonzero(keep).astype(np.int64)


# ---------------------------------------------------------------------------------- one deletion request

def request_classes(classes: Sequence[int], requests: int) -> list[tuple[int, ...]]:
    """Class removal over k requests: one class per request (k = 1 forgets every listed class at once)."""
    classes = tuple(int(c) for c in classes)
    if requests == 1:
        return [classes]
    if len(classes) != requests or len(set(classes)) != len(classes):
        raise ConfigError(f"class forgetting with {requests} requests forgets one class per request: forget_classes "
                          f"must list {requests} distinct classes, got {classes}")
    return [(c,) for c in classes]


def select_request(kind: str, pool: np.ndarray, *, index: int, size: int, seed: int, labels: np.ndarray,
                   classes: Sequence[int] = (), scores: np.ndarray | None = None, center: float | None = None
                   ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """The forget ids of request `index` (0-based) from `pool`, and its (low, mid, high) groups for a mix.

    * `random` — `size` ids with `RandomState(seed + index)` (request 1 uses the run's own seed);
    * `class` — every id of `classes` (this request's classes, see `request_classes`) in the pool;
    * `mix` — `mix_groups(scores, size, pool, seed=seed + index, center=center)`: `scores` are memorization
      levels computed by the caller (see `proxies.memorization`); ties in the request's seeded order (the
      request's seed, as `Request.seed`); `center` is 0.5 for true memorization scores, else the median.
    """
    if kind == "random":
        return random_forget(pool, size, seed + index), None
    if kind == "class":
        return class_forget(labels, classes, pool), None
    if kind == "mix":
        if scores is None:
            raise ConfigError("a mix forget set needs memorization scores")
        groups = mix_groups(scores, size, pool, seed=seed + index, center=center)
        return np.sort(np.concatenate(groups)), groups
    raise ConfigError(f"unknown forget kind {kind!r}; valid: random, class, mix")
