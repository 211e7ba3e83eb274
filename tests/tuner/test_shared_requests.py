"""Trials of one sequential search share their tasks: with `ranking_model="retrain"` (the search's default) the forget
sets of requests 2..k come from the retrained models, so every configuration gets the same sets, and the
prepare stage builds their retrains once; the trials then train nothing. A second prepare of the same settings
(a resumed search, or another search on the same store) reads the record the first left and starts no Ray task."""
from __future__ import annotations

import dataclasses

import pytest
import ray

from tuner import records
from tuner.prepare import _prepare_one, prepare
from unlearn_core.data import load_dataset
from unlearn_core.run import start
from unlearn_core.spec import ExperimentSpec
from unlearn_core.workspace import Workspace


@pytest.fixture(scope="module")
def spec(shared_store):
    return ExperimentSpec(width=0.125, train_epochs=2, forget="mix", forget_size=30, device="cpu",
                          store=str(shared_store))


@pytest.fixture(scope="module")
def prepared(spec):
    data = load_dataset("digits", None, spec.split_seed)
    report = _prepare_one(spec, data, 1, ("confidence",), 3, "retrain")  # what the prepare stage runs as a Ray task
    return data, report


def test_two_trials_of_a_sequential_search_share_forget_sets_and_retrains(spec, prepared):
    data, _ = prepared
    trials = []
    for lr in (0.02, 0.005):  # two configurations, as two trials
        logs = []
        rec = start(spec, "finetune", {"epochs": 1, "lr": lr}, Workspace(spec, data, log=logs.append), requests=3,
                    ranking_model="retrain", views=("selection",), log=logs.append).run()
        trials.append((rec, logs))
    (a, logs_a), (b, logs_b) = trials
    assert [r["forget_ids_sha"] for r in a["requests"]] == [r["forget_ids_sha"] for r in b["requests"]]
    assert a["requests"][2]["end_weights_sha"] != b["requests"][2]["end_weights_sha"]  # different models ...
    assert not [ln for ln in logs_a + logs_b if ln.startswith("training")]  # ... and every retrain was prepared


def test_ranking_by_the_current_model_stays_available(spec):
    data = load_dataset("digits", None, spec.split_seed)
    recs = [start(spec, "finetune", {"epochs": 1, "lr": lr}, Workspace(spec, data), requests=2,
                  ranking_model="current").run() for lr in (0.05, 0.001)]
    assert recs[0]["ranking_model"] == "current"
    assert recs[0]["requests"][0]["forget_ids_sha"] == recs[1]["requests"][0]["forget_ids_sha"]  # request 1: original


def test_a_prepared_spec_is_read_from_the_store_without_a_task(spec, prepared):
    data, report = prepared
    lines = []
    out = prepare([spec], {"digits": data}, cpus=1, gpus=0, proxies=("confidence",), requests=3,
                  ranking_model="retrain", log=lines.append)
    assert out == [report]
    assert lines == ["prepare: digits resnet18 seed 0 already prepared in the store"]
    assert not ray.is_initialized(), "a prepared spec must not start Ray"


@pytest.mark.parametrize("change", ["requests", "ranking_model", "proxies", "forget_size", "seed", "train_epochs",
                                    "precision", "device"])
def test_any_other_setting_is_prepared_again(spec, prepared, change):
    data, _ = prepared
    args = {"proxies": ("confidence",), "requests": 3, "ranking_model": "retrain", "device": "cpu"}
    s = spec
    if change == "requests":
        args["requests"] = 2
    elif change == "ranking_model":
        args["ranking_model"] = "current"
    elif change == "proxies":
        args["proxies"] = ("entropy",)
    elif change == "precision":
        s = dataclasses.replace(spec, precision="bf16")
    elif change == "device":  # a GPU task: bf16 by default
        args["device"] = "cuda"
    else:
        s = dataclasses.replace(spec, **{change: getattr(spec, change) + 1})
    same = records.prepared_key(spec, data, ("confidence",), 3, "retrain", "cpu")
    assert records.load(spec, "prepared", same) is not None
    key = records.prepared_key(s, data, args["proxies"], args["requests"], args["ranking_model"], args["device"])
    assert key != same and records.load(s, "prepared", key) is None


def test_the_cpu_default_precision_is_prepared_once(spec, prepared):
    """The key holds the precision as resolved: no --precision on a CPU is the same as --precision fp32."""
    data, report = prepared
    key = records.prepared_key(dataclasses.replace(spec, precision="fp32"), data, ("confidence",), 3, "retrain", "cpu")
    assert records.load(spec, "prepared", key) == report
    assert report["spec"]["precision"] == "fp32" and report["spec"]["memory_format"] == "channels_last"
