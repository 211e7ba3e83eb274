"""Forget-set selectors on hand-made scores (exact ids), on a reference-sized pool, and on bad input."""
from __future__ import annotations

import numpy as np
import pytest

from unlearn_core.errors import ConfigError
from functools import partial

from unlearn_core import forget
from unlearn_core.forget import class_forget, random_forget, retain_ids, validate_ids

# Rankings break ties by a seeded random order (tests/unlearn_core/test_ties.py); one seed here.
by_score, mix, mix_groups = (partial(f, seed=0) for f in (forget.by_score, forget.mix, forget.mix_groups))

# id:          0  1  2  3  4  5  6   7  8  9
SCORES = np.array([9, 1, 5, 7, 3, 5, 0, 10, 2, 6], dtype=float)
# descending: 7, 0, 3, 9, {2, 5}, 4, 8, 1, 6; median 5, distance to it: 2,5 → 0; 9 → 1; 3,4 → 2; 8 → 3 ...


def test_by_score_top_bottom_median():
    assert by_score(SCORES, 3, "top").tolist() == [0, 3, 7]
    assert by_score(SCORES, 3, "bottom").tolist() == [1, 6, 8]
    assert by_score(SCORES, 3, "median").tolist() == [2, 5, 9]
    for which in ("top", "bottom", "median"):
        out = by_score(SCORES, 2, which)
        assert out.dtype == np.int64


def test_by_score_ties_go_by_the_seed_not_by_id():
    # 2 and 5 tie at score 5 for the fifth place of top-5: which one is taken depends on the seed only
    fifth = {tuple(forget.by_score(SCORES, 5, "top", seed=s).tolist()) for s in range(20)}
    assert fifth == {(0, 2, 3, 7, 9), (0, 3, 5, 7, 9)}
    assert forget.by_score(SCORES, 5, "top", seed=3).tolist() == forget.by_score(SCORES, 5, "top", seed=3).tolist()


def test_by_score_pool_and_center():
    pool = np.array([8, 1, 2, 4, 6])  # scores 2, 1, 5, 3, 0; unsorted on purpose
    assert by_score(SCORES, 2, "top", pool).tolist() == [2, 4]
    assert by_score(SCORES, 1, "median", pool).tolist() == [8]  # pool median is 2
    assert by_score(SCORES, 2, "median", center=0.0).tolist() == [1, 6]


def test_mix_and_groups():
    low, mid, high = mix_groups(SCORES, 6)
    assert (low.tolist(), mid.tolist(), high.tolist()) == ([1, 6], [2, 5], [0, 7])
    assert mix(SCORES, 6).tolist() == [0, 1, 2, 5, 6, 7]
    low, mid, high = mix_groups(SCORES, 7)  # the remainder goes to the low group
    assert (len(low), len(mid), len(high)) == (3, 2, 2)


def test_mix_resolves_overlaps_to_n_distinct_ids():
    """The whole pool: the reference's mid group (nearest median = id 2) would repeat a low-group id."""
    pool = np.arange(5)  # scores 9, 1, 5, 7, 3: median 5
    low, mid, high = mix_groups(SCORES, 5, pool)
    assert (low.tolist(), mid.tolist(), high.tolist()) == ([1, 2, 4], [3], [0])
    assert mix(SCORES, 5, pool).tolist() == [0, 1, 2, 3, 4]


def test_mix_on_reference_sized_pool_equals_plain_groups():
    """45k examples, mix-3000: no overlap, so each group is exactly the reference's 1000-example list."""
    scores = np.random.default_rng(0).random(45_000)
    low, mid, high = mix_groups(scores, 3000)
    assert np.array_equal(high, by_score(scores, 1000, "top"))
    assert np.array_equal(mid, by_score(scores, 1000, "median"))
    assert np.array_equal(low, by_score(scores, 1000, "bottom"))
    assert np.array_equal(mix(scores, 3000), np.sort(np.concatenate([low, mid, high])))


def test_class_forget():
    labels = np.array([0, 1, 2, 1, 0, 2, 1])
    assert class_forget(labels, [1]).tolist() == [1, 3, 6]
    assert class_forget(labels, [0, 2]).tolist() == [0, 2, 4, 5]
    assert class_forget(labels, [1], pool=np.array([6, 0, 1])).tolist() == [1, 6]
    with pytest.raises(ConfigError, match=r"class\(es\) \[7\] have no examples in the pool; classes present: 0, 1, 2"):
        class_forget(labels, [7])
    with pytest.raises(ConfigError, match="no examples"):
        class_forget(labels, [2], pool=np.array([0, 1]))
    with pytest.raises(ConfigError, match="no classes"):
        class_forget(labels, [])


def test_random_forget():
    pool = np.arange(100, 200)
    a = random_forget(pool, 10, seed=3)
    assert len(np.unique(a)) == 10 and np.all(np.diff(a) > 0) and np.isin(a, pool).all()
    assert np.array_equal(a, random_forget(pool[::-1], 10, seed=3))  # pool order does not matter
    assert not np.array_equal(a, random_forget(pool, 10, seed=4))
    with pytest.raises(ConfigError, match=r"n must be an integer in \[1, 100\].*got n=101"):
        random_forget(pool, 101, seed=0)
    with pytest.raises(ConfigError, match="n=0"):
        random_forget(pool, 0, seed=0)
    with pytest.raises(ConfigError, match="more than once"):
        random_forget(np.array([1, 1, 2]), 1, seed=0)


def test_selector_errors():
    with pytest.raises(ConfigError, match=r"by_score\('top'\): n must be an integer in \[1, 10\].*n=11"):
        by_score(SCORES, 11, "top")
    with pytest.raises(ConfigError, match=r"\[1, 3\]"):
        by_score(SCORES, 4, "top", pool=np.array([0, 1, 2]))
    with pytest.raises(ConfigError, match=r"pool ids: ids must lie in \[0, 10\).*max 10"):
        by_score(SCORES, 1, "top", pool=np.array([3, 10]))
    with pytest.raises(ConfigError, match="which must be one of top, bottom, median, got 'middle'"):
        by_score(SCORES, 1, "middle")
    with pytest.raises(ConfigError, match="NaN"):
        by_score(np.array([1.0, np.nan, 2.0]), 1, "top")
    with pytest.raises(ConfigError, match=r"mix: n must be an integer in \[3, 10\]"):
        mix(SCORES, 2)


def test_validate_ids():
    assert validate_ids([5, 1, 3], 6).tolist() == [1, 3, 5]
    with pytest.raises(ConfigError, match=r"ids must lie in \[0, 6\), got 2 outside \(min -1, max 6\)"):
        validate_ids([-1, 2, 6], 6)
    with pytest.raises(ConfigError, match=r"1 ids appear more than once, e.g. \[2\]"):
        validate_ids([2, 2, 3], 6)
    with pytest.raises(ConfigError, match="empty"):
        validate_ids([], 6)
    with pytest.raises(ConfigError, match="integer ids, got dtype float64"):
        validate_ids([1.5], 6)


def test_retain_ids():
    assert retain_ids(8, np.array([1, 2]), np.array([2, 5])).tolist() == [0, 3, 4, 6, 7]
    assert retain_ids(3).tolist() == [0, 1, 2]
    assert retain_ids(3, np.array([], dtype=np.int64)).tolist() == [0, 1, 2]
    with pytest.raises(ConfigError, match="leaves none of the 3"):
        retain_ids(3, np.array([0, 1]), np.array([2]))
    with pytest.raises(ConfigError, match=r"exclude set 0: ids must lie in \[0, 3\)"):
        retain_ids(3, np.array([3]))
