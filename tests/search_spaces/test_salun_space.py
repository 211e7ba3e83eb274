"""The SalUn space: its ranges, the published configs first (SalUn README, then the RUM script), a RUM stage."""
from __future__ import annotations

import optuna

from search_spaces import flatten_rum, get_space, to_config_params, unflatten_rum
from search_spaces.rum import stage_algorithms

optuna.logging.set_verbosity(optuna.logging.WARNING)

FIELDS = {"lr", "epochs", "ratio", "batch_size", "momentum", "weight_decay", "augment"}


def test_random_trials_stay_in_range():
    space = get_space("salun")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        returned = space.define(trial)
        cfg = to_config_params(space, {**trial.params, **returned})
        study.tell(trial, 0.0)
        assert set(cfg) == FIELDS and 1e-3 <= cfg["lr"] <= 0.1 and 2 <= cfg["epochs"] <= 10
        assert 0.1 <= cfg["ratio"] <= 1.0
        assert (cfg["batch_size"], cfg["momentum"], cfg["weight_decay"], cfg["augment"]) == (256, 0.9, 5e-4, False)


def test_paper_configs_are_the_published_ones_readme_first():
    assert get_space("salun").paper_configs == (
        {"lr": 0.013, "epochs": 10, "ratio": 0.5},   # SalUn README, CIFAR-10 ResNet-18
        {"lr": 0.1, "epochs": 5, "ratio": 0.5},      # RUM:main_rum.py, the high stage
        {"lr": 0.1, "epochs": 10, "ratio": 0.5},     # SalUn README until 2024-04
    )


def test_a_rum_stage_choice():
    assert "salun" in stage_algorithms()
    plan = [{"algorithm": "none", "params": {}}, {"algorithm": "none", "params": {}},
            {"algorithm": "salun", "params": {"lr": 0.1, "epochs": 5, "ratio": 0.5}}]
    flat = flatten_rum(plan)
    assert {k: v for k, v in flat.items() if k.startswith("high_salun_")} == {
        "high_salun_lr": 0.1, "high_salun_epochs": 5, "high_salun_ratio": 0.5}
    assert unflatten_rum(flat) == plan
