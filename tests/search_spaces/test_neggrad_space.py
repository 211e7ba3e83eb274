"""The NegGrad space: its ranges, the references' scripted config first, a RUM stage choice."""
from __future__ import annotations

import optuna

from search_spaces import flatten_rum, get_space, to_config_params, unflatten_rum
from search_spaces.rum import stage_algorithms

optuna.logging.set_verbosity(optuna.logging.WARNING)

FIELDS = {"lr", "epochs", "forget_batch_size", "momentum", "weight_decay", "augment"}


def test_random_trials_stay_in_range():
    space = get_space("neggrad")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        returned = space.define(trial)
        cfg = to_config_params(space, {**trial.params, **returned})
        study.tell(trial, 0.0)
        assert set(cfg) == FIELDS and 1e-5 <= cfg["lr"] <= 1e-2 and 2 <= cfg["epochs"] <= 10
        assert (cfg["forget_batch_size"], cfg["momentum"], cfg["weight_decay"]) == (256, 0.9, 5e-4)


def test_paper_config_is_the_scripted_one():
    assert get_space("neggrad").paper_configs == ({"lr": 1e-4, "epochs": 5},)


def test_a_rum_stage_choice():
    assert "neggrad" in stage_algorithms()
    plan = [{"algorithm": "neggrad", "params": {"lr": 1e-4, "epochs": 5}}, {"algorithm": "none", "params": {}},
            {"algorithm": "none", "params": {}}]
    assert flatten_rum(plan)["low_ga_lr"] == 1e-4 and unflatten_rum(flatten_rum(plan)) == plan
