"""A search whose `--storage` is an object store (a real S3-compatible server on loopback, moto's server mode):
everything it writes lands in the bucket — Tune's experiment, the artifact store, trial states, prepare and
final records, the Optuna study (a journal, with no --optuna-storage given) and the outputs — nothing on the
local disk under the working folder. It is interrupted with SIGINT after its last trial has started (Tune then
marks the running trials TERMINATED, which must not pass for finished), and `--resume`d.
"""
from __future__ import annotations

import io
import json
import signal
from types import SimpleNamespace

import fsspec
import optuna
import pandas as pd
import pytest
import torch

from .conftest import interrupt_when

pytestmark = pytest.mark.slow

NUM_SAMPLES = 2
# Small batches and one max pass: each trial runs several seconds, so both are caught mid-run.
SLOW = {"lr": 0.005, "epochs": 10, "max_steps": 1, "alpha": 0.5, "gamma": 1.0, "temperature": 4.0,
        "forget_batch_size": 16, "retain_batch_size": 64}
ARGS = ["--num-samples", str(NUM_SAMPLES), "--train-epochs", "3", "--width", "0.125", "--final-seeds", "2",
        "--top-k", "0", "--no-dashboard"]  # finals: the paper config only (CI time)


def s3():
    return fsspec.filesystem("s3", skip_instance_cache=True)


def states(fs, exp: str) -> list[dict]:
    """The trials' saved rows, read live from the bucket."""
    fs.invalidate_cache()  # s3fs caches listings; a polling reader must not
    rows = []
    for path in fs.glob(f"{exp}/trial-state/*.pt"):
        try:
            rows.append(torch.load(io.BytesIO(fs.cat_file(path)), weights_only=True)["row"])
        except Exception:  # noqa: BLE001  being replaced right now
            continue
    return rows


def statuses(fs, exp: str) -> dict[str, str]:
    fs.invalidate_cache()
    df = pd.read_csv(io.BytesIO(fs.cat_file(f"{exp}/trials.csv")), dtype={"trial_id": str})
    return dict(zip(df["trial_id"], df["status"]))


def read_study(journal: bytes, name: str, folder) -> optuna.Study:
    """The study in a journal file's bytes (the copy in the bucket), read as optuna-dashboard would."""
    from optuna.storages.journal import JournalFileBackend

    (folder / "optuna.log").write_bytes(journal)
    return optuna.load_study(study_name=name,
                             storage=optuna.storages.JournalStorage(JournalFileBackend(str(folder / "optuna.log"))))


@pytest.fixture(scope="module")
def s3_run(s3_server, search_root, search_popen, search_cli):
    fs = s3()
    fs.mkdir("unlearn")
    exp = "unlearn/runs/s3"
    points = search_root / "s3-points.json"
    points.write_text(json.dumps([SLOW, {**SLOW, "lr": 0.004}]))
    log = search_root / "s3-interrupted.log"
    args = ["scrub", "--storage", "s3://unlearn/runs", "--name", "s3", *ARGS]
    proc = search_popen(*args, "--points", str(points), out=log)
    def both_running():
        rows = states(fs, exp)
        return len(rows) == NUM_SAMPLES and not all(r["final"] for r in rows)

    # every 0.5 s: each look is a listing and reads through the S3 server, which competes for the CPU
    rc = interrupt_when(proc, both_running, log, signal.SIGINT, "both trials running", every=0.5)
    fs.invalidate_cache()
    first = SimpleNamespace(rc=rc, log=log.read_text(), files=set(fs.find(exp)), statuses=statuses(fs, exp)
                            if fs.exists(f"{exp}/trials.csv") else {})
    resumed = search_cli("scrub", "--storage", "s3://unlearn/runs", "--name", "s3", "--resume")
    return SimpleNamespace(first=first, resumed=resumed, fs=fs, exp=exp)


def test_sigint_after_the_last_trial_started_is_an_interruption(s3_run):
    first = s3_run.first
    assert first.rc == 130, f"exit {first.rc}\n{first.log[-4000:]}"
    assert "search interrupted; continue with: python -m tuner.search scrub --name s3" in first.log
    assert not any("best_configs" in f for f in first.files), "an interrupted search published best_configs"
    assert len([f for f in first.files if "/trial-state/" in f]) == NUM_SAMPLES, "trial states were dropped"
    assert "unfinished" in first.statuses.values() and "stopped" not in first.statuses.values(), first.statuses


def test_resume_finishes_the_same_trials_and_the_study_agrees(s3_run, tmp_path):
    proc, fs, exp = s3_run.resumed, s3_run.fs, s3_run.exp
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"
    after = statuses(fs, exp)
    assert set(after) == set(s3_run.first.statuses), (after, s3_run.first.statuses)
    assert set(after.values()) <= {"completed", "stopped", "diverged"}, after
    study = read_study(fs.cat_file(f"{exp}/optuna.log"), "s3/digits-resnet18", tmp_path)
    states_ = [t.state for t in study.trials]
    assert len(states_) == NUM_SAMPLES
    done = sum(s in ("completed", "diverged") for s in after.values())
    assert states_.count(optuna.trial.TrialState.COMPLETE) == done, (states_, after)
    assert states_.count(optuna.trial.TrialState.PRUNED) == list(after.values()).count("stopped")


def test_the_whole_search_is_in_the_bucket(s3_run, search_root):
    fs, exp = s3_run.fs, s3_run.exp
    assert s3_run.resumed.returncode == 0
    fs.invalidate_cache()
    names = {p[len(exp) + 1:] for p in fs.find(exp)}
    for f in ("search.json", "trials.csv", "best_configs.json", "best_configs.md", "best_configs.csv",
              "pareto_front.csv", "optuna.log"):
        assert f in names, sorted(names)
    assert any(n.startswith("tune-digits-resnet18/experiment_state") for n in names), sorted(names)
    assert not any(n.startswith("trial-state/") for n in names), "a finished search keeps no trial weights"
    store = {p.split("/")[3] for p in fs.find("unlearn/runs/artifacts")}
    assert {"original", "retrain", "prepared", "final"} <= store, store
    assert not (search_root / "runs" / "s3").exists() and not (search_root / "unlearn").exists()
