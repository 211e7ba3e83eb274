"""Early stopping judges like with like: Ray's real ASHA, fed the rows the trainable reports from real runs.

The paper's CIFAR-10 ResNet-18 SCRUB config (10 epochs, 5 max passes as the paper ran them) spends its first
epochs forgetting; a 3-epoch config with one max pass looks better at every early epoch. ASHA's clock is the
share of a trial's own schedule (`progress`), and only `settled` rows are reported (SCRUB: after its max phase),
so the paper config cannot be stopped while it is still in its max phase.
"""
from __future__ import annotations

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

import search_spaces
from tuner.service import asha, asha_rungs
from tuner.trainable import Evaluations
from unlearn_core.run import start
from unlearn_core.spec import ExperimentSpec
from unlearn_core.workspace import Workspace

SHORT = {"lr": 0.01, "epochs": 3, "max_steps": 1, "alpha": 0.9, "gamma": 0.9}


@pytest.fixture(scope="module")
def ws(shared_store):
    spec = ExperimentSpec(width=0.125, train_epochs=2, forget_size=30, store=str(shared_store),
                          device="cpu")
    return Workspace(spec)


def reported(ws, params) -> list[dict]:
    """The rows a trial reports (trainable.run_trial's filter) and the epochs of its max phase."""
    policy = Evaluations(asha_rungs(), mia_at_rungs=False)
    run = start(ws.spec, "scrub", params, ws, views=("selection",), evaluate=policy)
    return [row for row in run.epochs() if "sel_tow" in row]


def test_the_paper_scrub_config_is_not_stopped_during_its_max_phase(ws):
    paper = search_spaces.to_config_params("scrub", search_spaces.paper_config("scrub", "cifar10", "resnet18"))
    assert (paper["epochs"], paper["max_steps"]) == (10, 5)
    paper_rows, short_rows = reported(ws, paper), reported(ws, SHORT)
    assert [r["epoch"] for r in paper_rows] == [6, 7, 8, 9, 10]  # nothing from the max phase (epochs 1-5)
    assert [r["epoch"] for r in short_rows] == [2, 3]

    scheduler = asha("both")
    short, long_ = Trial("short", stub=True), Trial("paper", stub=True)
    scheduler.on_trial_add(None, short)
    scheduler.on_trial_add(None, long_)
    for r in short_rows:  # the short config reaches every rung first, with better values than anything below
        scheduler.on_trial_result(None, short, {**r, "sel_tow": 1.0})
    decisions = [(r["epoch"], scheduler.on_trial_result(None, long_, r)) for r in paper_rows]
    assert decisions[0][0] == 6  # the first time ASHA sees the paper config at all is after its max phase
    assert all(epoch > paper["max_steps"] for epoch, d in decisions if d == TrialScheduler.STOP)


def test_a_stopped_trial_is_judged_at_the_same_share_of_its_schedule(ws):
    rows = reported(ws, SHORT)
    assert [r["progress"] for r in rows] == pytest.approx([200 / 3, 100.0])
    assert asha_rungs() == (30, 90)  # rungs are shares of a trial's own schedule, not epochs
