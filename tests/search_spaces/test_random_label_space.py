"""The Random Label space: its ranges, the RUM README's config first, and its place among RUM's stages."""
from __future__ import annotations

import optuna

from search_spaces import flatten_rum, get_space, paper_config, to_config_params, unflatten_rum
from search_spaces.rum import stage_algorithms

optuna.logging.set_verbosity(optuna.logging.WARNING)

FIELDS = {"lr", "epochs", "batch_size", "momentum", "weight_decay", "augment"}


def test_random_trials_stay_in_range():
    space = get_space("random_label")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        returned = space.define(trial)
        cfg = to_config_params(space, {**trial.params, **returned})
        study.tell(trial, 0.0)
        assert set(cfg) == FIELDS and 1e-3 <= cfg["lr"] <= 0.1 and 2 <= cfg["epochs"] <= 10
        assert (cfg["batch_size"], cfg["momentum"], cfg["weight_decay"], cfg["augment"]) == (256, 0.9, 5e-4, False)


def test_paper_config_is_the_rum_readme_row():
    assert get_space("random_label").paper_configs == ({"lr": 0.1, "epochs": 10},)   # RUM README, RL_og
    assert paper_config("random_label", "cifar100", "vgg16_bn") == {"lr": 0.1, "epochs": 10}


def test_a_rum_stage_choice():
    assert "random_label" in stage_algorithms()
    plan = [{"algorithm": "none", "params": {}}, {"algorithm": "none", "params": {}},
            {"algorithm": "random_label", "params": {"lr": 0.05, "epochs": 3}}]
    assert flatten_rum(plan) == {"low_algorithm": "none", "mid_algorithm": "none", "high_algorithm": "random_label",
                                 "high_rl_lr": 0.05, "high_rl_epochs": 3}
    assert unflatten_rum(flatten_rum(plan)) == plan
