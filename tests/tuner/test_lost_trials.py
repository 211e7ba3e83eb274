"""A trial that a killed driver started and finished after its last experiment snapshot is gone from the resumed
Tune experiment, but not from the study (Optuna was told its values) nor from its saved state: its trials.csv
row comes back from that state, its config from the study trial told the same values (tuner/lost_trials.py).
Real Optuna storage (SQLite) and real trial-state files; the multi-node driver-kill test meets the same case
when the kill lands in that window."""
from __future__ import annotations

import json

import optuna
import pytest

import search_spaces
from tuner.lost_trials import lost_trial_rows
from tuner.trial_schema import trial_metrics, trial_row
from tuner.trial_state import TrialState

METRICS = ("final_sel_tow", "final_sel_tow_mia")
A = {"lr": 0.01, "epochs": 10, "max_steps": 5, "alpha": 0.9, "gamma": 0.9, "temperature": 4.0,
     "forget_batch_size": 256, "retain_batch_size": 256}
B = {**A, "lr": 0.005, "epochs": 4}
C = {**A, "lr": 0.002, "epochs": 3}


def run_row(tow: float, tow_mia: float, final: bool = True, diverged: str = "") -> dict:
    return {"progress": 100.0 if final else 20.0, "epoch": 4, "request": 1, "sel_tow": tow, "sel_tow_mia": tow_mia,
            "request_sel_tow": tow, "request_sel_tow_mia": tow_mia, "forget_acc": 50.0, "retain_acc": 99.0,
            "val_acc": 97.0, "sel_mia": 0.5, "unlearn_seconds": 1.0, "final": int(final), "diverged": diverged}


@pytest.fixture
def study(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name="s/digits-resnet18", storage=f"sqlite:///{tmp_path}/optuna.db",
                               directions=["maximize", "maximize"])


def tell(study, params: dict, values: list[float]) -> None:
    study.enqueue_trial(params)
    t = study.ask()
    search_spaces.get_space("scrub").define(t)
    study.tell(t, values)


def tune_row(trial_id: str, params: dict, metrics: dict, status: str = "completed") -> dict:
    return trial_row("digits", "resnet18", trial_id, status, metrics, None,
                     json.dumps(search_spaces.to_config_params("scrub", params)))


def test_a_trial_finished_after_the_last_snapshot_gets_its_row_back(study, tmp_path):
    states = str(tmp_path / "trial-state")
    known = trial_metrics(run_row(0.8, 0.7), "node")
    lost = trial_metrics(run_row(0.6, 0.5), "node")
    tell(study, A, [0.8, 0.7])
    tell(study, B, [0.6, 0.5])
    TrialState(states, "aaaa").save(None, known)
    TrialState(states, "bbbb").save(None, lost)
    TrialState(states, "cccc").save({"weights": 1}, trial_metrics(run_row(0.1, 0.1, final=False), "node"))

    rows = lost_trial_rows(states, [tune_row("aaaa", A, known)], study, "scrub", METRICS, "digits", "resnet18")

    assert [r["trial_id"] for r in rows] == ["bbbb"], "only the finished trial Tune does not know; cccc never ended"
    (r,) = rows
    assert r["status"] == "completed" and (r["sel_tow"], r["sel_tow_mia"]) == (0.6, 0.5)
    assert json.loads(r["params"]) == search_spaces.to_config_params("scrub", B)
    assert list(r) == list(tune_row("x", A, known))  # a trials.csv row like any other


def test_equal_values_are_told_apart_by_the_configs_tune_knows(study, tmp_path):
    """Two diverged trials both told (0, 0): the one Tune returned claims its own config first."""
    states = str(tmp_path / "trial-state")
    diverged = trial_metrics(run_row(0.0, 0.0, diverged="loss diverged"), "node")
    tell(study, A, [0.0, 0.0])
    tell(study, C, [0.0, 0.0])
    TrialState(states, "aaaa").save(None, diverged)
    TrialState(states, "cccc").save(None, diverged)

    rows = lost_trial_rows(states, [tune_row("cccc", C, diverged, "diverged")], study, "scrub", METRICS, "digits",
                           "resnet18")

    assert [(r["trial_id"], r["status"]) for r in rows] == [("aaaa", "diverged")]
    assert json.loads(rows[0]["params"]) == search_spaces.to_config_params("scrub", A)


def test_nothing_is_lost_when_every_saved_trial_is_tunes(study, tmp_path):
    states = str(tmp_path / "trial-state")
    known = trial_metrics(run_row(0.8, 0.7), "node")
    tell(study, A, [0.8, 0.7])
    TrialState(states, "aaaa").save(None, known)
    assert lost_trial_rows(states, [tune_row("aaaa", A, known)], study, "scrub", METRICS, "d", "a") == []
    assert lost_trial_rows(str(tmp_path / "none"), [], study, "scrub", METRICS, "d", "a") == []
