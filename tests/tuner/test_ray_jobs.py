"""Searches run the Ray way on a `ray start --head` cluster on 127.0.0.1 (token auth on, dashboard on):

* submitted as a Ray Job exactly as the README's cluster guide says — `ray job submit --working-dir . --
  python -m tuner.search ...`, no --address: the driver joins the cluster named by RAY_ADDRESS, which Ray sets
  for a job — it ends SUCCEEDED, and its log is readable with `ray job logs`;
* at the same time, two drivers on this machine race for one experiment name (joining the same cluster through
  RAY_ADDRESS): one is refused in one line before it touches anything, the other finishes a whole search (SalUn:
  a search over any registered algorithm runs like SCRUB's);
* both experiments use one `--optuna-storage`: it holds two studies, one per experiment.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # --import-mode=importlib puts nothing on sys.path
from ray_nodes import BIN, RAY, Cluster  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NUM_SAMPLES = 2
ARGS = ["--num-samples", str(NUM_SAMPLES), "--train-epochs", "3", "--width", "0.125", "--final-seeds", "2",
        "--top-k", "0"]
TIMEOUT = 600


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    # The job's `python` is the one this test runs (what `source ~/venv/bin/activate` gives on a ray-up node).
    c.env["PATH"] = os.pathsep.join([str(BIN), c.env.get("PATH", "")])
    try:
        c.start_head(num_cpus=2, dashboard=True)
        yield c
    finally:
        c.shutdown()


def job(cluster, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`ray job ...` as a user runs it: RAY_ADDRESS is the dashboard, the token comes from the environment."""
    return subprocess.run([RAY, "job", *args], cwd=ROOT, env={**cluster.env, "RAY_ADDRESS": cluster.dashboard_url},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def runs(cluster, shared_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    study_db = f"sqlite:///{root}/studies.db"
    common = ["--storage", str(root), "--store", str(shared_store), "--optuna-storage", study_db, *ARGS]
    submitted = job(cluster, "submit", "--no-wait", "--submission-id", "jobbed", "--working-dir", ".", "--",
                    "python", "-m", "tuner.search", "scrub", "--name", "jobbed", *common)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    # Two drivers on this machine, joining the cluster through RAY_ADDRESS (no --address), race for one name.
    env = {**cluster.env, "RAY_ADDRESS": cluster.address}
    racers = [subprocess.Popen([sys.executable, "-m", "tuner.search", "salun", "--name", "raced", *common],
                               cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    try:
        raced = [(p, *p.communicate(timeout=TIMEOUT)) for p in racers]
    finally:
        for p in racers:
            if p.poll() is None:
                p.kill()
    deadline = time.monotonic() + TIMEOUT
    while (status := job(cluster, "status", "jobbed")).returncode == 0 and not any(
            f"job 'jobbed' {s}" in status.stdout.lower() for s in ("succeeded", "failed", "stopped")):
        assert time.monotonic() < deadline, status.stdout
        time.sleep(2)
    logs = job(cluster, "logs", "jobbed")
    return {"root": root, "study_db": study_db, "status": status.stdout + status.stderr, "logs": logs.stdout,
            "raced": raced}


def test_a_search_submitted_as_a_ray_job_succeeds_and_its_log_is_readable(runs):
    assert "Job 'jobbed' succeeded" in runs["status"], f"{runs['status']}\n{runs['logs'][-5000:]}"
    log = runs["logs"]
    assert "Ray: joined" in log, log[-3000:]  # the job's RAY_ADDRESS, not a private local Ray
    assert "**recommended" in log and f"digits/resnet18: search seed 0; {NUM_SAMPLES} trials (" in log, log[-3000:]
    assert json.loads((runs["root"] / "jobbed" / "best_configs.json").read_text())[0]["trials_run"] == NUM_SAMPLES


def test_of_two_searches_racing_for_one_name_one_is_refused_and_the_other_is_whole(runs):
    codes = sorted(p.returncode for p, _, _ in runs["raced"])
    assert codes == [0, 2], [(p.returncode, out[-2000:], err[-2000:]) for p, out, err in runs["raced"]]
    _, _, err = next(r for r in runs["raced"] if r[0].returncode == 2)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "experiment 'raced' already exists" in lines[0], lines
    exp = runs["root"] / "raced"
    tune_dir = exp / "tune-digits-resnet18"
    assert len(list(tune_dir.glob("experiment_state-*.json"))) == 1
    assert len([p for p in tune_dir.iterdir() if p.is_dir()]) == NUM_SAMPLES
    trials = pd.read_csv(exp / "trials.csv")
    assert len(trials) == NUM_SAMPLES and set(trials["status"]) <= {"completed", "stopped", "diverged"}
    assert json.loads((exp / "best_configs.json").read_text())[0]["trials_run"] == NUM_SAMPLES


def test_one_optuna_storage_holds_one_study_per_experiment(runs):
    summaries = optuna.get_all_study_summaries(storage=runs["study_db"])
    assert sorted(s.study_name for s in summaries) == ["jobbed/digits-resnet18", "raced/digits-resnet18"]
    assert all(s.n_trials == NUM_SAMPLES for s in summaries), [(s.study_name, s.n_trials) for s in summaries]
