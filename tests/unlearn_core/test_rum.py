"""RUM: plan validation, memorization groups, §3.4 retain sets, chaining of sub-steps, divergence (digits)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unlearn_core.errors import ConfigError
from unlearn_core.experiment import ExperimentSpec, Workspace
from unlearn_core.forget import mix_groups
from unlearn_core.metrics import accuracy, predict_probs
from unlearn_core.proxies import memorization
from unlearn_core.rum import LEVELS, parse_plan, plan_dict, rum_diverged, run_rum, split_by_score

SPEC = dict(dataset="digits", width=0.125, train_epochs=6, device="cpu")
NONE = {"algorithm": "none", "params": {}}
FT = {"algorithm": "finetune", "params": {"epochs": 1, "lr": 0.02}}
SCRUB = {"algorithm": "scrub", "params": {"epochs": 1, "max_steps": 1, "lr": 0.01}}
NG = {"algorithm": "neggrad_plus", "params": {"epochs": 1, "lr": 0.01, "beta": 0.9}}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    w = Workspace(ExperimentSpec(**SPEC, store=str(tmp_path_factory.getbasetemp() / "store")))
    w.original()
    return w


@pytest.fixture(scope="module")
def groups(ws):
    """The reference's confidence mix of 30 as (low, mid, high)."""
    return mix_groups(memorization(ws, "confidence"), 30)


@pytest.fixture(scope="module")
def exclude(ws, groups):
    """An earlier request's forget set: 20 ids outside the groups."""
    rest = np.setdiff1d(np.arange(len(ws.train)), np.concatenate(groups))
    return np.sort(np.random.default_rng(1).choice(rest, 20, replace=False))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------------- plans

def test_parse_plan_fills_defaults_and_accepts_json():
    steps = parse_plan([NONE, FT, {"algorithm": "neggrad_plus", "params": {"beta": 0.97}}])
    assert [a for a, _ in steps] == ["none", "finetune", "neggrad_plus"]
    assert steps[0][1] is None
    assert steps[1][1].epochs == 1 and steps[1][1].lr == 0.02 and steps[1][1].weight_decay == 5e-4
    assert steps[2][1].beta == 0.97 and steps[2][1].lr == 0.01  # the config's default
    assert parse_plan(json.dumps([NONE, FT, NONE])) == parse_plan([NONE, FT, NONE])
    assert parse_plan([{"algorithm": "none"}] * 3) == [("none", None)] * 3  # params may be omitted
    assert plan_dict(parse_plan(plan_dict(steps))) == plan_dict(steps)


@pytest.mark.parametrize("plan, message", [
    ([NONE, NONE], r"list of 3 steps .* got 2 steps"),
    ({"low": NONE}, "list of 3 steps"),
    ([NONE, NONE, "scrub"], "high step must be a mapping"),
    ([NONE, {"algorithm": "salun", "params": {}}, NONE], r"mid step: unknown algorithm 'salun'; valid: none, finetune"),
    ([NONE, {"params": {}}, NONE], "mid step has no 'algorithm'"),
    ([{"algorithm": "none", "params": {"lr": 0.1}}, NONE, NONE], "low step runs 'none', which takes no params"),
    ([NONE, {**FT, "epochs": 3}, NONE], r"mid step has unknown key\(s\) epochs"),
    ([NONE, NONE, {"algorithm": "scrub", "params": {"alpha": 0.5, "betaa": 1}}],
     r"high step \(scrub\): unknown hyperparameter\(s\) betaa"),
    ([{"algorithm": "finetune", "params": {"lr": -1.0}}, NONE, NONE], r"low step \(finetune\): lr must be > 0"),
    ([{"algorithm": "finetune", "params": {"lr": None}}, NONE, NONE], r"low step \(finetune\)"),
    ([{"algorithm": "finetune", "params": {"epochs": 2.5}}, NONE, NONE], "epochs must be an integer, got 2.5"),
    ([NONE, {"algorithm": "scrub", "params": {"epochs": 2, "max_steps": 3}}, NONE], "max_steps <= epochs"),
    ([NONE, NONE, {"algorithm": "neggrad_plus", "params": {"beta": 1.5}}], "0 <= beta <= 1"),
    ("[1, 2", "must be JSON"),
])
def test_parse_plan_rejects_bad_plans(plan, message):
    with pytest.raises(ConfigError, match=message):
        parse_plan(plan)


# ------------------------------------------------------------------------------------------------ groups

def test_split_by_score_is_an_equal_three_way_split():
    scores = np.array([5.0, 0.0, 9.0, 3.0, 7.0, 1.0, 8.0, 2.0, 6.0, 4.0, -1.0])
    forget = np.array([0, 1, 2, 3, 4, 5, 6])  # scores 5, 0, 9, 3, 7, 1, 8
    low, mid, high = split_by_score(scores, forget)
    assert (low.tolist(), mid.tolist(), high.tolist()) == ([1, 3, 5], [0, 4], [2, 6])
    with pytest.raises(ConfigError, match="at least 3"):
        split_by_score(scores, [0, 1])


def test_groups_are_checked_before_anything_runs(ws, groups):
    model, _ = ws.original()
    low, mid, high = groups
    bad = [
        ((low, low, high), "disjoint"),
        ((low, mid, np.array([], np.int64)), "high group: ids: empty"),
        ((low, mid), "needs 3 groups"),
        ((low, mid, np.array([len(ws.train)])), "high group: ids: ids must lie in"),
    ]
    for g, message in bad:
        with pytest.raises(ConfigError, match=message):
            run_rum(ws, model, g, [FT, FT, FT], seed=0)
    with pytest.raises(ConfigError, match="excluded"):
        run_rum(ws, model, groups, [FT, FT, FT], exclude=[high[:1]], seed=0)
    with pytest.raises(ConfigError, match="unknown algorithm"):
        run_rum(ws, model, groups, [FT, FT, {"algorithm": "rl"}], seed=0)


# --------------------------------------------------------------------------------------------- running

def test_none_plan_returns_the_original_model(ws, groups):
    original, _ = ws.original()
    seen = []
    model, subs = run_rum(ws, original, groups, [NONE] * 3, seed=0, on_substep=seen.append)
    assert _same_weights(model, original)
    assert [s["algorithm"] for s in subs] == ["none"] * 3 and [s["level"] for s in subs] == list(LEVELS)
    assert all(s["epochs"] == 0 and s["unlearn_seconds"] == 0.0 and s["diverged"] is None for s in subs)
    assert [s["retain_size"] for s in subs] == [len(ws.train) - 10, len(ws.train) - 20, len(ws.train) - 30]
    for level, g in zip(LEVELS, groups):  # group accuracies are the original's
        d = ws.train.subset(g)
        assert subs[-1]["group_acc"][level] == accuracy(predict_probs(original, d.x), d.y)
    assert len(seen) == 3


@pytest.fixture(scope="module")
def full_run(ws, groups, exclude):
    original, _ = ws.original()
    before = {k: v.clone() for k, v in original.state_dict().items()}
    seen = []
    model, subs = run_rum(ws, original, groups, [FT, SCRUB, NG], exclude=[exclude], seed=3, on_substep=seen.append)
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items())  # input not modified
    return model, subs, seen


def test_substep_sets_follow_the_reference(ws, groups, exclude, full_run):
    """§3.4: low: D − L; mid: D − (L ∪ M); high: D − (L ∪ M ∪ H); and minus the earlier request."""
    _, subs, seen = full_run
    everything = np.arange(len(ws.train))
    for i, (level, g) in enumerate(zip(LEVELS, groups)):
        assert seen[i]["level"] == level
        assert np.array_equal(seen[i]["forget_ids"], g)
        expected = np.setdiff1d(everything, np.concatenate([*groups[:i + 1], exclude]))
        assert np.array_equal(seen[i]["retain_ids"], expected)
        for later in groups[i + 1:]:  # later groups are still retained
            assert np.isin(later, seen[i]["retain_ids"]).all()
        assert subs[i]["forget_size"] == len(g) and subs[i]["retain_size"] == len(expected)
    assert [s["algorithm"] for s in subs] == ["finetune", "scrub", "neggrad_plus"]
    assert subs[1]["params"]["max_steps"] == 1 and subs[1]["params"]["temperature"] == 4.0  # all fields
    assert all(s["epochs"] == 1 and s["unlearn_seconds"] > 0 and s["diverged"] is None for s in subs)
    assert "forget_kl" in subs[1]["history"][0]


def test_each_substep_starts_from_the_previous_model(ws, groups, exclude, full_run):
    """The 3-step plan equals the three sub-steps run one at a time, each from the last one's output."""
    model, _, _ = full_run
    original, _ = ws.original()
    m = original
    for i, step in enumerate((FT, SCRUB, NG)):
        plan = [NONE] * 3
        plan[i] = step
        m, _ = run_rum(ws, m, groups, plan, exclude=[exclude], seed=3)
    assert _same_weights(m, model)
    # ... and it matters where a sub-step starts: the high step alone from the original differs
    alone, _ = run_rum(ws, original, groups, [NONE, NONE, NG], exclude=[exclude], seed=3)
    assert not _same_weights(alone, model)


def test_divergence_ends_rum_with_the_reason(ws, groups):
    original, _ = ws.original()
    boom = {"algorithm": "neggrad_plus", "params": {"beta": 0.0, "lr": 1.0, "epochs": 20}}
    model, subs = run_rum(ws, original, groups, [NONE, boom, FT], seed=0)
    assert [s["level"] for s in subs] == ["low", "mid"]  # high never ran
    d = subs[-1]["diverged"]
    assert d is not None and d["reason"] and subs[-1]["epochs"] < 20
    assert rum_diverged(subs)["level"] == "mid"
    assert rum_diverged(subs[:1]) is None
