"""RUM: plan validation, memorization groups, per-stage retain sets, chaining of stages, divergence (digits).

RUM is a registered algorithm ("rum", params {"plan": [...], "proxy": ...}); these tests drive it either
through the run driver (`run.start`, a mix forget set whose groups come from `forget.mix_groups`) or
directly as `rum.Rum(model, Request(...), cfg)` with hand-made groups, epoch by epoch (`next_epoch`/`finish`).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unlearn_core import references
from unlearn_core.errors import ConfigError, LossDiverged
from unlearn_core.forget import mix_groups
from unlearn_core.metrics import accuracy, predict_probs
from unlearn_core.proxies import memorization, weights_sha
from unlearn_core.rum import (LEVELS, SCRIPT_NEGGRAD_PLUS_PLAN, Rum, parse_plan, plan_dict, stage_algorithms,
                              split_by_score)
from unlearn_core.run import start
from unlearn_core.spec import ExperimentSpec
from unlearn_core.unlearning import Request, make_config
from unlearn_core.workspace import Workspace

SPEC = dict(dataset="digits", width=0.125, train_epochs=6, device="cpu")
NONE = {"algorithm": "none", "params": {}}
FT = {"algorithm": "finetune", "params": {"epochs": 1, "lr": 0.02}}
SCRUB = {"algorithm": "scrub", "params": {"epochs": 1, "max_steps": 1, "lr": 0.01}}
NG = {"algorithm": "neggrad_plus", "params": {"epochs": 1, "lr": 0.01, "beta": 0.9}}
PROXY = "confidence"


@pytest.fixture(scope="module")
def ws(shared_store):
    w = Workspace(ExperimentSpec(**SPEC, store=str(shared_store)))
    references.original(w)
    return w


@pytest.fixture(scope="module")
def mix_spec(ws):
    """The workspace's spec with a confidence mix of 30: a run's first request is the `groups` fixture."""
    return ExperimentSpec(**SPEC, store=ws.spec.store, forget="mix", forget_size=30, proxy=PROXY)


@pytest.fixture(scope="module")
def groups(ws):
    """The confidence mix of 30 as (low, mid, high), ties in the order of seed 0 (a run's first request)."""
    return mix_groups(memorization(ws, PROXY), 30, seed=0)


@pytest.fixture(scope="module")
def exclude(ws, groups):
    """An earlier request's forget set: 20 ids outside the groups."""
    rest = np.setdiff1d(np.arange(len(ws.train)), np.concatenate(groups))
    return np.sort(np.random.default_rng(1).choice(rest, 20, replace=False))


def _original(ws) -> torch.nn.Module:
    return references.original(ws)[0]  # a fresh copy each call


def _rum(ws, model, groups, plan, *, exclude=(), seed=0) -> Rum:
    """RUM on hand-made (low, mid, high) groups, as a request selected as a mix by the same proxy gives them."""
    request = Request(ws, np.concatenate(groups), list(exclude), seed, {}, tuple(groups), PROXY)
    return Rum(model, request, make_config("rum", {"plan": plan, "proxy": PROXY}))


def _drive(rum: Rum) -> dict:
    """Every epoch of every stage, then the request's extra record fields ({"stages", "group_sizes"})."""
    while rum.epoch < rum.epochs:
        rum.next_epoch()
    return rum.finish()


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
    assert {"none", "finetune", "neggrad_plus", "scrub"} <= set(stage_algorithms()) and "rum" not in stage_algorithms()


def test_rum_config_is_the_plan_with_every_field_explicit():
    """`make_config("rum", params)` validates the plan (the one place hyperparameters are checked)."""
    cfg = make_config("rum", {"plan": json.dumps([NONE, FT, NG])})
    assert cfg.plan == plan_dict(parse_plan([NONE, FT, NG])) and cfg.proxy is None
    assert cfg.epochs == 2  # none: 0, finetune: 1, neggrad_plus: 1
    # Changed on purpose (issue #11): a plan may be omitted; RUM then runs the RUM script's NegGrad+ plan
    # (the CLI's default), where the old run_sequential refused params without a plan.
    default = make_config("rum", {"proxy": "holdout"})
    assert default.plan == plan_dict(parse_plan(SCRIPT_NEGGRAD_PLUS_PLAN)) and default.proxy == "holdout"
    assert [s["params"]["beta"] for s in default.plan] == [0.99, 0.97, 0.97]


BAD_PLANS = [
    ([NONE, NONE], r"list of 3 steps .* got 2 steps"),
    ({"low": NONE}, "list of 3 steps"),
    ([NONE, NONE, "scrub"], "high step must be a mapping"),
    ([NONE, {"algorithm": "sallun", "params": {}}, NONE],
     r"mid step: unknown algorithm 'sallun'; valid: none, finetune"),
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
]


@pytest.mark.parametrize("plan, message", BAD_PLANS)
def test_parse_plan_rejects_bad_plans(plan, message):
    with pytest.raises(ConfigError, match=message):
        parse_plan(plan)
    with pytest.raises(ConfigError, match=message):  # the same check where a run validates its params
        make_config("rum", {"plan": plan})


def test_rum_params_are_checked_like_any_algorithm():
    with pytest.raises(ConfigError, match=r"unknown hyperparameter\(s\) order for rum; valid: plan, proxy"):
        make_config("rum", {"plan": [NONE, FT, NG], "order": "high-first"})
    with pytest.raises(ConfigError, match="unknown proxy 'loss'"):
        make_config("rum", {"plan": [NONE, FT, NG], "proxy": "loss"})


# ------------------------------------------------------------------------------------------------ groups

def test_split_by_score_is_an_equal_three_way_split():
    scores = np.array([5.0, 0.0, 9.0, 3.0, 7.0, 1.0, 8.0, 2.0, 6.0, 4.0, -1.0])
    forget = np.array([0, 1, 2, 3, 4, 5, 6])  # scores 5, 0, 9, 3, 7, 1, 8
    for seed in (0, 1):  # no ties: the seed (issue #13: it orders tied scores) does not matter
        low, mid, high = split_by_score(scores, forget, seed=seed)
        assert (low.tolist(), mid.tolist(), high.tolist()) == ([1, 3, 5], [0, 4], [2, 6])
    with pytest.raises(ConfigError, match="at least 3"):
        split_by_score(scores, [0, 1], seed=0)


def test_a_request_without_groups_is_split_by_its_scores(ws, groups):
    """A random or class request has no mix groups: RUM splits it three ways by the proxy's scores (ties in
    the order of the request's seed)."""
    ids = np.sort(np.random.default_rng(0).choice(len(ws.train), 30, replace=False))
    scores = memorization(ws, PROXY)
    rum = Rum(_original(ws), Request(ws, ids, [], 5, {PROXY: scores}),
              make_config("rum", {"plan": [FT, FT, FT], "proxy": PROXY}))
    assert all(np.array_equal(a, b) for a, b in zip(rum.groups, split_by_score(scores, ids, seed=5)))
    # ... and mix groups ranked by another proxy are not this proxy's groups: split by score too
    other = Rum(_original(ws), Request(ws, np.concatenate(groups), [], 0, {PROXY: scores}, tuple(groups), "holdout"),
                make_config("rum", {"plan": [FT, FT, FT], "proxy": PROXY}))
    assert all(np.array_equal(a, b)
               for a, b in zip(other.groups, split_by_score(scores, np.concatenate(groups), seed=0)))


def test_groups_are_checked_before_anything_runs(ws, groups):
    model = _original(ws)
    low, mid, high = groups
    bad = [
        ((low, low, high), "disjoint"),
        ((low, mid, np.array([], np.int64)), "high group: ids: empty"),
        ((low, mid), "needs 3 groups"),
        ((low, mid, np.array([len(ws.train)])), "high group: ids: ids must lie in"),
    ]
    for g, message in bad:
        with pytest.raises(ConfigError, match=message):
            _rum(ws, model, g, [FT, FT, FT])
    with pytest.raises(ConfigError, match="excluded"):
        _rum(ws, model, groups, [FT, FT, FT], exclude=[high[:1]])
    with pytest.raises(ConfigError, match="unknown algorithm"):
        make_config("rum", {"plan": [FT, FT, {"algorithm": "rl"}]})
    assert _same_weights(model, _original(ws))  # nothing ran


# --------------------------------------------------------------------------------------------- running

def test_none_plan_returns_the_original_model(ws, mix_spec, groups):
    original = _original(ws)
    seen = []
    rec = start(mix_spec, "rum", {"plan": [NONE] * 3}, ws, on_request=lambda r, model, q: seen.append(model)).run()
    assert rec["diverged"] is None  # (old: rum_diverged(stages) is None)
    (req,) = rec["requests"]
    assert _same_weights(seen[0], original)
    assert req["start_weights_sha"] == req["end_weights_sha"] == weights_sha(original)
    subs = req["stages"]
    assert [s["algorithm"] for s in subs] == ["none"] * 3 and [s["level"] for s in subs] == list(LEVELS)
    assert all(s["epochs"] == 0 and s["unlearn_seconds"] == 0.0 and s["diverged"] is None for s in subs)
    assert [s["retain_size"] for s in subs] == [len(ws.train) - 10, len(ws.train) - 20, len(ws.train) - 30]
    assert req["group_sizes"] == [10, 10, 10] and req["history"] == []
    for level, g in zip(LEVELS, groups):  # the run's groups are the mix groups; accuracies are the original's
        d = ws.train.subset(g)
        assert subs[-1]["group_acc"][level] == accuracy(predict_probs(original, d.x), d.y)
    assert len(seen) == 1 and len(subs) == 3


@pytest.fixture(scope="module")
def full_run(ws, groups, exclude):
    """[FT, SCRUB, NG] on the groups, with an earlier request's set excluded; records every stage's sets."""
    seen = []
    create = Rum._create

    def spy(self, i):
        inner = create(self, i)
        seen.append({"level": LEVELS[i], "forget_ids": inner.forget.ids.cpu().numpy(),
                     "retain_ids": inner.retain.ids.cpu().numpy()})
        return inner

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Rum, "_create", spy)
        rum = _rum(ws, _original(ws), groups, [FT, SCRUB, NG], exclude=[exclude], seed=3)
        extra = _drive(rum)
    # Rum unlearns the model it is given in place; the run driver hands it a copy of the last request's model
    # (test_sequential checks that a finished request's model is not changed by the next), so the old
    # "input not modified" check of run_rum belongs to the driver now.
    return rum.model, extra["stages"], seen


def test_stage_sets_follow_the_reference(ws, groups, exclude, full_run):
    """Retain sets (the RUM code's --sequential rule): low: D − L; mid: D − (L ∪ M); high: D − (L ∪ M ∪ H);
    and minus the earlier request."""
    _, subs, seen = full_run
    everything = np.arange(len(ws.train))
    assert len(seen) == 3
    for i, (level, g) in enumerate(zip(LEVELS, groups)):
        assert seen[i]["level"] == level
        assert np.array_equal(np.sort(seen[i]["forget_ids"]), g)
        expected = np.setdiff1d(everything, np.concatenate([*groups[:i + 1], exclude]))
        assert np.array_equal(np.sort(seen[i]["retain_ids"]), expected)
        for later in groups[i + 1:]:  # later groups are still retained
            assert np.isin(later, seen[i]["retain_ids"]).all()
        assert subs[i]["forget_size"] == len(g) and subs[i]["retain_size"] == len(expected)
    assert [s["algorithm"] for s in subs] == ["finetune", "scrub", "neggrad_plus"]
    assert subs[1]["params"]["max_steps"] == 1 and subs[1]["params"]["temperature"] == 4.0  # all fields
    assert all(s["epochs"] == 1 and s["unlearn_seconds"] > 0 and s["diverged"] is None for s in subs)
    assert "forget_kl" in subs[1]["history"][0]


def test_each_stage_starts_from_the_previous_model(ws, groups, exclude, full_run):
    """The 3-stage plan equals the three stages run one at a time, each from the last one's output."""
    model, _, _ = full_run
    m = _original(ws)
    for i, step in enumerate((FT, SCRUB, NG)):
        plan = [NONE] * 3
        plan[i] = step
        rum = _rum(ws, m, groups, plan, exclude=[exclude], seed=3)
        _drive(rum)
        m = rum.model
    assert _same_weights(m, model)
    # ... and it matters where a stage starts: the high stage alone from the original differs
    alone = _rum(ws, _original(ws), groups, [NONE, NONE, NG], exclude=[exclude], seed=3)
    _drive(alone)
    assert not _same_weights(alone.model, model)


BOOM = {"algorithm": "neggrad_plus", "params": {"beta": 0.0, "lr": 1.0, "epochs": 20}}


def test_divergence_ends_rum_with_the_reason(ws, groups):
    rum = _rum(ws, _original(ws), groups, [NONE, BOOM, FT])
    with pytest.raises(LossDiverged) as info:
        _drive(rum)
    assert info.value.level == "mid"
    subs = rum.finish()["stages"]
    assert [s["level"] for s in subs] == ["low", "mid"]  # high never ran
    d = subs[-1]["diverged"]
    assert d is not None and d["reason"] and subs[-1]["epochs"] < 20


def test_a_diverged_stage_ends_the_run_with_its_level(ws, mix_spec):
    rec = start(mix_spec, "rum", {"plan": [NONE, BOOM, FT]}, ws).run()
    d = rec["diverged"]
    assert d["request"] == 1 and d["level"] == "mid" and d["reason"]  # (old: rum_diverged(stages)["level"])
    (req,) = rec["requests"]
    assert [s["level"] for s in req["stages"]] == ["low", "mid"]
    assert req["diverged"]["level"] == "mid" and req["diverged"]["reason"] == req["stages"][-1]["diverged"]["reason"]
    # Changed on purpose (issue #11): a diverged request scores 0.
    assert rec["tow"] == rec["tow_mia"] == req["tow"] == req["tow_mia"] == 0.0
