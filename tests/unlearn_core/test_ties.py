"""Tied scores are ordered by a seeded random order, never by id (issue #13 part 2).

Every ranking — `forget.by_score`, `forget.mix_groups` / `mix`, `forget.select_request`'s mix and
`rum.split_by_score` — takes a required `seed`: the same seed gives the same groups, another seed other groups,
and a group cut out of a run of tied scores is not a contiguous block of ids.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from unlearn_core.errors import ConfigError
from unlearn_core.forget import by_score, mix, mix_groups, select_request, tie_order
from unlearn_core.rum import Rum, RumConfig, split_by_score
from unlearn_core.unlearning import Request

# 12 distinct values, like `bin_acc` (a mean of 0/1 over 11 training epochs), each a block of 50 ids
BLOCKS = np.repeat(np.arange(12) / 11, 50)
# the same 12 values, scattered over the ids
rng = np.random.default_rng(123)
SCATTERED = rng.choice(np.arange(12) / 11, 600)
NONE = {"algorithm": "none", "params": {}}


def contiguous(ids: np.ndarray) -> bool:
    return bool(np.all(np.diff(np.sort(ids)) == 1))


def first_of_class(ids: np.ndarray, scores: np.ndarray, value: float, *, last: bool = False) -> bool:
    """Whether the chosen ids of one tied value are the lowest (or highest) ids that have that value."""
    tied = np.flatnonzero(scores == value)
    chosen = np.intersect1d(ids, tied)
    want = tied[-len(chosen):] if last else tied[:len(chosen)]
    return len(chosen) > 0 and np.array_equal(chosen, want)


@pytest.mark.parametrize("which", ["top", "bottom", "median"])
def test_by_score_breaks_ties_by_seed_not_by_id(which):
    picks = [by_score(BLOCKS, 30, which, seed=s) for s in (0, 1, 2)]
    for p in picks:
        assert len(p) == 30 and len(np.unique(BLOCKS[p])) == 1  # 30 of one 50-id tie block
        assert not contiguous(p)
    assert not np.array_equal(picks[0], picks[1]) and not np.array_equal(picks[1], picks[2])
    assert np.array_equal(by_score(BLOCKS, 30, which, seed=1), picks[1])


def test_seed_is_required_and_checked():
    with pytest.raises(TypeError):
        by_score(BLOCKS, 3, "top")  # noqa  (keyword-only, no default)
    with pytest.raises(TypeError):
        mix_groups(BLOCKS, 30)  # noqa
    with pytest.raises(TypeError):
        split_by_score(BLOCKS, np.arange(30))  # noqa
    with pytest.raises(ConfigError, match="seed .* must be an integer >= 0, got -1"):
        mix(BLOCKS, 30, seed=-1)


def test_mix_groups_differ_across_seeds_and_are_not_id_runs():
    groups = {s: mix_groups(BLOCKS, 90, seed=s) for s in (0, 1, 2)}
    for low, mid, high in groups.values():
        assert [len(low), len(mid), len(high)] == [30, 30, 30]
        assert set(BLOCKS[high]) == {1.0} and set(BLOCKS[low]) == {0.0}
        for g in (low, mid, high):
            assert not contiguous(g)
        # the reference's stable sort would take the first tied ids (high: 550..579; low: 0..29)
        assert not first_of_class(high, BLOCKS, 1.0) and not first_of_class(low, BLOCKS, 0.0)
        assert not first_of_class(low, BLOCKS, 0.0, last=True)
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert all(not np.array_equal(x, y) for x, y in zip(groups[a], groups[b]))
    again = mix_groups(BLOCKS, 90, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(again, groups[1]))
    assert np.array_equal(mix(BLOCKS, 90, seed=1), np.sort(np.concatenate(groups[1])))


def test_scattered_ties_are_not_the_lowest_ids_of_their_value():
    low, mid, high = mix_groups(SCATTERED, 60, seed=0)
    assert not first_of_class(high, SCATTERED, 1.0) and not first_of_class(low, SCATTERED, 0.0)
    assert not np.array_equal(high, mix_groups(SCATTERED, 60, seed=1)[2])


def test_group_sizes_when_n_is_not_a_multiple_of_three():
    for n, sizes in ((31, (11, 10, 10)), (32, (12, 10, 10)), (3, (1, 1, 1))):
        low, mid, high = mix_groups(BLOCKS, n, seed=0)
        assert (len(low), len(mid), len(high)) == sizes
        low, mid, high = split_by_score(BLOCKS, np.arange(0, 600, 600 // n)[:n], seed=0)
        assert (len(low), len(mid), len(high)) == sizes


def test_tie_order_does_not_depend_on_the_pool():
    """The secondary key is a rank of every id, so restricting the pool keeps the relative order of ties."""
    pool = np.arange(0, 600, 2)
    full = by_score(BLOCKS, 50, "top", seed=4)  # the whole top block, in tie order: all of it
    assert np.array_equal(full, np.arange(550, 600))
    order = tie_order(600, 4)
    in_pool = np.intersect1d(np.arange(550, 600), pool)
    expected = np.sort(in_pool[np.argsort(order[in_pool])][:10])
    assert np.array_equal(by_score(BLOCKS, 10, "top", pool, seed=4), expected)


def test_select_request_mix_uses_the_request_seed():
    pool = np.arange(600)
    kw = dict(size=60, labels=np.zeros(600, np.int64), scores=BLOCKS)
    a, ga = select_request("mix", pool, index=0, seed=5, **kw)
    b, gb = select_request("mix", pool, index=0, seed=5, **kw)
    c, _ = select_request("mix", pool, index=0, seed=6, **kw)
    d, _ = select_request("mix", pool, index=1, seed=5, **kw)  # request 2 of seed 5: seed 6's order
    assert np.array_equal(a, b) and not np.array_equal(a, c) and np.array_equal(c, d)
    assert all(np.array_equal(x, y) for x, y in zip(ga, mix_groups(BLOCKS, 60, pool, seed=5)))


def test_split_by_score_and_rum_use_the_request_seed():
    forget = np.arange(1, 600, 3)  # 200 ids, 16-17 per tied value: group boundaries fall inside ties
    splits = [split_by_score(BLOCKS, forget, seed=s) for s in (0, 1)]
    assert not all(np.array_equal(x, y) for x, y in zip(*splits))
    assert all(np.array_equal(x, y) for x, y in zip(split_by_score(BLOCKS, forget, seed=1), splits[1]))
    ws = SimpleNamespace(train=range(600))
    cfg = RumConfig(plan=[NONE, NONE, NONE], proxy="bin_acc")
    for seed in (0, 1):
        rum = Rum(None, Request(ws, forget, [], seed, {"bin_acc": BLOCKS}), cfg)
        assert all(np.array_equal(x, y) for x, y in zip(rum.groups, splits[seed]))
