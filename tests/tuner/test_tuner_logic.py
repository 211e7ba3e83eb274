"""The tuner's pure logic: trial status, resources, settings, and the one progress loop's error handling."""
from __future__ import annotations

import pytest

from tuner.service import trial_resources
from tuner.settings import SearchSettings
from tuner.trial_schema import trial_status
from unlearn_core.errors import ConfigError


@pytest.mark.parametrize("metrics, errored, interrupted, status", [
    ({"final": 1, "diverged": 0}, False, False, "completed"),
    ({"final": 1, "diverged": 1}, False, False, "diverged"),   # finished, objective 0
    ({"final": 0, "diverged": 0}, False, False, "stopped"),    # ended early, search not interrupted: ASHA
    ({"final": 0, "diverged": 0}, False, True, "unfinished"),  # the interrupt cut it off: --resume finishes it
    ({}, True, False, "error"),
])
def test_trial_status(metrics, errored, interrupted, status):
    assert trial_status(metrics, errored, interrupted) == status


def settings(**kw) -> SearchSettings:
    return SearchSettings(algorithm="scrub", datasets=("digits",), archs=("resnet18",), exp_dir="/x/e", store="/x/a",
                          optuna_url="sqlite:////x/e/optuna.db", **kw)


def test_resources_fill_the_cluster_and_share_gpus():
    assert trial_resources(settings(), {"CPU": 8}) == (1.0, 0.0, 8)
    assert trial_resources(settings(), {"CPU": 16, "GPU": 2}) == (1.0, 0.25, 8)  # 4 trials per GPU by default
    assert trial_resources(settings(gpus_per_trial=0.5, cpus_per_trial=2.0), {"CPU": 16, "GPU": 1}) == (2.0, 0.5, 2)
    assert trial_resources(settings(max_concurrent=3), {"CPU": 16}) == (1.0, 0.0, 3)
    with pytest.raises(ConfigError, match="GPU"):
        trial_resources(settings(gpus_per_trial=0.5), {"CPU": 4})
    # a joined cluster whose GPU workers start at zero: the trials wait for the autoscaler, all of them queued
    assert trial_resources(settings(gpus_per_trial=0.25, num_samples=64), {"CPU": 8}, joined=True) == (1.0, 0.25, 64)
    assert trial_resources(settings(), {"CPU": 8}, joined=True) == (1.0, 0.0, 8)  # no GPU asked for: none used


def test_settings_round_trip_through_search_json():
    s = settings(final_seeds=(1, 2, 3), forget_classes=(3, 7), points=({"lr": 0.01},))
    assert SearchSettings.from_json(s.to_json()) == s
    assert s.spec("digits", "resnet18", 4).seed == 4 and s.spec("digits", "resnet18", 4).forget == "mix"


def test_a_config_error_inside_a_ray_task_is_the_same_one_line_error():
    import ray

    from tuner.progress import as_completed

    def bad():
        raise ConfigError("forget_size 100000 exceeds the 1293 training examples")

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        ref = ray.remote(bad).options(max_retries=0).remote()
        with pytest.raises(ConfigError) as err:
            list(as_completed({ref: "x"}))
        assert str(err.value) == "forget_size 100000 exceeds the 1293 training examples"
    finally:
        ray.shutdown()
