"""The l1-sparse space: its ranges, the scripted config (α from third-party scripts) first, a RUM stage choice."""
from __future__ import annotations

import optuna

from search_spaces import flatten_rum, get_space, to_config_params, unflatten_rum
from search_spaces.rum import stage_algorithms

optuna.logging.set_verbosity(optuna.logging.WARNING)

FIELDS = {"lr", "epochs", "alpha", "retain_batch_size", "momentum", "weight_decay", "augment"}


def test_random_trials_stay_in_range():
    space = get_space("l1_sparse")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        returned = space.define(trial)
        cfg = to_config_params(space, {**trial.params, **returned})
        study.tell(trial, 0.0)
        assert set(cfg) == FIELDS and 1e-3 <= cfg["lr"] <= 0.1 and 2 <= cfg["epochs"] <= 10
        assert 1e-6 <= cfg["alpha"] <= 1e-3
        assert (cfg["retain_batch_size"], cfg["momentum"], cfg["weight_decay"]) == (256, 0.9, 5e-4)


def test_paper_config_is_the_scripted_one():
    assert get_space("l1_sparse").paper_configs == ({"lr": 0.01, "epochs": 10, "alpha": 1e-4},)


def test_a_rum_stage_choice():
    assert "l1_sparse" in stage_algorithms()
    plan = [{"algorithm": "none", "params": {}}, {"algorithm": "l1_sparse", "params": {"lr": 0.01, "alpha": 1e-4}},
            {"algorithm": "none", "params": {}}]
    assert flatten_rum(plan)["mid_l1_alpha"] == 1e-4 and unflatten_rum(flatten_rum(plan)) == plan
