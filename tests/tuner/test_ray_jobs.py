"""Searches run the Ray way, and watched the Ray way, on one `ray start --head` cluster on 127.0.0.1 (token auth,
dashboard on, `--metrics-export-port`):

* a search submitted as a Ray Job exactly as the README's cluster guide says — `ray job submit --working-dir .
  -- python -m tuner.search ...`, no --address: the driver joins the cluster named by RAY_ADDRESS, which Ray
  sets for a job — ends SUCCEEDED, and its log is readable with `ray job logs`;
* at the same time, two drivers on this machine race for one experiment name (joining the same cluster through
  RAY_ADDRESS): one is refused in one line before it touches anything, the other finishes a whole search (SalUn:
  a search over any registered algorithm runs like SCRUB's);
* both experiments use one `--optuna-storage`: it holds two studies, one per experiment;
* the dashboard's view: the Tasks page (`ray list tasks`) names the prepare, final and study tasks after what
  they build (the SalUn search has an artifact store of its own, so its prepare tasks run; the smoke study
  follows), and Ray's own task metric (`ray_tasks`, what Grafana charts) carries the same names;
* the smoke study (`python -m tuner.study`, joining through RAY_ADDRESS, on the SalUn search's originals) writes
  every figure and its report, one-shot and sequential rows, intervals from the seeds it ran, and resumes with
  nothing left to run (and no Ray);
* the head's metrics endpoint, scraped throughout, serves the job's search gauges beside Ray's own, agreeing
  with its trials.csv; the Grafana dashboard in docs/ queries only metrics the endpoint serves.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image as mpimg
import optuna
import pandas as pd
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))  # --import-mode=importlib puts nothing on sys.path
from metrics_scraper import PREFIX, Scraper, metrics_port  # noqa: E402
from ray_nodes import BIN, RAY, Cluster  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "docs" / "grafana-search-dashboard.json"
NUM_SAMPLES = 2
# --top-k 0: the finals re-run only the paper's config (what a searched winner publishes is tested in test_search.py)
ARGS = ["--num-samples", str(NUM_SAMPLES), "--train-epochs", "3", "--width", "0.125", "--final-seeds", "2",
        "--top-k", "0"]
# The trials: two short points per search, so no sampled trial of unknown length runs; the job's run 5 epochs,
# which report from epoch 2 on: enough reports for an epochs-per-second gauge to show between two of them.
POINTS = {"scrub": [{"lr": lr, "epochs": 5, "max_steps": 1, "alpha": 0.5, "gamma": 1.0, "temperature": 4.0,
                     "forget_batch_size": 64, "retain_batch_size": 128} for lr in (0.01, 0.005)],
          "salun": [{"lr": lr, "epochs": 2, "ratio": 0.5} for lr in (0.013, 0.005)]}
FIGURES = ("tow", "tow_mia", "test_acc", "retain_acc", "forget_acc")
PNG_SHAPE = (504, 768)  # 6.4 × 4.2 inches at 120 dpi (tuner/figures.py)
TIMEOUT = 600


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    # The job's `python` is the one this test runs (what `source ~/venv/bin/activate` gives on a ray-up node).
    c.env["PATH"] = os.pathsep.join([str(BIN), c.env.get("PATH", "")])
    # Ray sends a process's metrics to its node every 10 s by default; every 0.5 s here, so the last state of
    # the search is on the endpoint before its driver exits.
    c.env["RAY_metrics_report_interval_ms"] = "500"
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
def runs(cluster, shared_store, tmp_path_factory, in_process):
    root = tmp_path_factory.mktemp("jobs")
    study_db = f"sqlite:///{root}/studies.db"
    common = ["--storage", str(root), "--optuna-storage", study_db, *ARGS]
    points = {}
    for algorithm, configs in POINTS.items():
        points[algorithm] = root / f"{algorithm}-points.json"
        points[algorithm].write_text(json.dumps(configs))
    scraper = Scraper(metrics_port(cluster))
    scraper.start()
    submitted = job(cluster, "submit", "--no-wait", "--submission-id", "jobbed", "--working-dir", ".", "--",
                    "python", "-m", "tuner.search", "scrub", "--name", "jobbed", "--store", str(shared_store),
                    "--points", str(points["scrub"]), *common)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    # Two drivers on this machine, joining the cluster through RAY_ADDRESS (no --address), race for one name.
    env = {**cluster.env, "RAY_ADDRESS": cluster.address}
    racers = [subprocess.Popen([sys.executable, "-m", "tuner.search", "salun", "--name", "raced",
                                "--store", str(root / "artifacts"),
                                "--points", str(points["salun"]), *common],
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
    time.sleep(1.5)  # the driver's last export, scraped
    scraper.stop.set()
    scraper.join(timeout=10)
    logs = job(cluster, "logs", "jobbed")
    # The smoke study on the same cluster (its originals are the SalUn search's), then once more in this process:
    # resumable, with nothing left to run it needs no Ray of its own.
    study_args = ("--preset", "smoke", "--storage", str(root / "studies"), "--store", str(root / "artifacts"),
                  "--name", "smoke")
    study = subprocess.run([sys.executable, "-m", "tuner.study", *study_args], cwd=root, env=env,
                           capture_output=True, text=True, timeout=TIMEOUT)
    import ray

    from tuner.study import main as study_main

    again = in_process(study_main, *study_args)
    again.ray_started = ray.is_initialized()
    if again.ray_started:  # never leave a Ray behind in the test process
        ray.shutdown()
    listed = subprocess.run([RAY, "list", "tasks", "--address", cluster.dashboard_url, "--format", "json",
                             "--limit", "10000"], env=cluster.env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    exp = root / "jobbed"
    return {"root": root, "study_db": study_db, "status": status.stdout + status.stderr, "logs": logs.stdout,
            "raced": raced, "tasks": json.loads(listed.stdout), "scraper": scraper,
            "study": study, "study_again": again, "study_dir": root / "studies" / "smoke",
            "search": json.loads((exp / "search.json").read_text()) if (exp / "search.json").exists() else None,
            "trials": pd.read_csv(exp / "trials.csv", dtype={"trial_id": str}) if (exp / "trials.csv").exists()
            else None}


# --- Ray Jobs, RAY_ADDRESS, claims, study storage -------------------------------------------------------------
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
    # (Tune may keep more than one experiment_state-*.json of one experiment: the trial folders tell)
    assert len([p for p in tune_dir.iterdir() if p.is_dir()]) == NUM_SAMPLES
    trials = pd.read_csv(exp / "trials.csv")
    assert len(trials) == NUM_SAMPLES and set(trials["status"]) <= {"completed", "stopped", "diverged"}
    assert json.loads((exp / "best_configs.json").read_text())[0]["trials_run"] == NUM_SAMPLES


def test_one_optuna_storage_holds_one_study_per_experiment(runs):
    summaries = optuna.get_all_study_summaries(storage=runs["study_db"])
    assert sorted(s.study_name for s in summaries) == ["jobbed/digits-resnet18", "raced/digits-resnet18"]
    assert all(s.n_trials == NUM_SAMPLES for s in summaries), [(s.study_name, s.n_trials) for s in summaries]


# --- what the dashboard and Prometheus see ---------------------------------------------------------------------
def test_prepare_final_and_study_tasks_are_named_after_what_they_build(runs):
    names = {t["name"] for t in runs["tasks"]}
    seeds = [runs["search"]["search_seed"], *runs["search"]["final_seeds"]]
    assert {f"prepare digits/resnet18 seed {s}" for s in seeds} <= names, sorted(names)
    assert {f"final digits/resnet18 paper seed {s}" for s in runs["search"]["final_seeds"]} <= names, sorted(names)
    finals = [n for n in names if n.startswith("final ")]
    assert all(re.fullmatch(r"final digits/resnet18 (paper|trial \w+) seed \d+", n) for n in finals), finals
    assert {"study digits/resnet18 scrub (confidence) seed 0",
            "study digits/resnet18 RUM neggrad_plus (confidence) seed 1"} <= names, sorted(names)
    # the functions' own names would mean a task went unnamed
    assert not names & {"_prepare_one", "_run_one", "_run_cell"}, sorted(names)
    assert {f"prepare digits/resnet18 seed {s}" for s in seeds} <= runs["scraper"].task_names


def test_search_metrics_are_on_the_nodes_metrics_endpoint(runs):
    """The job's search, told from the SalUn search racing beside it by the `experiment` tag (its --name)."""
    scraper, trials = runs["scraper"], runs["trials"]
    pair = {"experiment": "jobbed", "dataset": "digits", "arch": "resnet18"}
    assert scraper.seen(f"{PREFIX}trials", experiment="raced"), "the other search's gauges are served too"
    by_status = trials["status"].value_counts().to_dict()
    ended = {s: scraper.last(f"{PREFIX}trials", status=s, **pair) for s in ("completed", "stopped", "diverged",
                                                                             "error")}
    assert ended == {s: float(by_status.get(s, 0)) for s in ended}, (ended, by_status)
    assert sum(ended.values()) == NUM_SAMPLES
    assert max(scraper.seen(f"{PREFIX}trials", status="running", **pair)) >= 1
    assert scraper.last(f"{PREFIX}trials", status="running", **pair) == 0
    completed = trials[trials["status"] == "completed"]
    assert len(completed) >= 1, trials
    for k in ("sel_tow", "sel_tow_mia"):
        best = scraper.last(f"{PREFIX}best_objective", objective=k, **pair)
        assert best is not None and 0 <= best <= 1
        assert best == pytest.approx(completed[k].max(), abs=1e-9), (k, best, completed[k].tolist())
    assert max(scraper.seen(f"{PREFIX}epochs_per_second", **pair)) > 0


def test_grafana_dashboard_queries_metrics_the_endpoint_serves(runs):
    """The project's gauges and Ray's own (GPU metrics aside: this cluster has no GPU)."""
    exprs = [t["expr"] for p in json.loads(GRAFANA.read_text())["panels"] for t in p.get("targets", [])]
    queried = set(re.findall(r"\bray_\w+", " ".join(exprs))) - {"ray_node_gpus_utilization"}
    assert {n for n in queried if n.startswith(PREFIX)} == {f"{PREFIX}{m}" for m in ("trials", "best_objective",
                                                                                    "epochs_per_second")}
    assert queried <= runs["scraper"].families, queried - runs["scraper"].families


# --- the smoke study, run on this cluster by `python -m tuner.study` (RAY_ADDRESS) ------------------------------
def test_smoke_study_writes_every_figure_and_the_summary(runs):
    first, exp = runs["study"], runs["study_dir"]
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for key in FIGURES:
        img = mpimg.imread(exp / "figures" / f"digits-resnet18-{key}.png")
        assert img.shape[:2] == PNG_SHAPE, (key, img.shape)
        assert img[..., :3].std() > 0.05, f"{key}: the figure is blank"
    report = (exp / "report.md").read_text()
    for key in FIGURES:
        assert f"figures/digits-resnet18-{key}.png" in report


def test_one_shot_and_sequential_rows_are_both_present(runs):
    exp = runs["study_dir"]
    report = (exp / "report.md").read_text()
    for method in ("scrub (confidence)", "neggrad_plus (confidence)"):
        assert re.search(rf"\| {re.escape(method)} \| one-shot \| 1 \| 2 \|", report), method
        assert re.search(rf"\| {re.escape(method)} \| sequential \| 2 \| 2 \|", report), method
    assert "| RUM neggrad_plus (confidence) | sequential | 2 | 2 |" in report
    # a one-shot run forgets exactly the union of the sequential requests of the same seed
    one = json.loads((exp / "runs" / "digits-resnet18-scrub-confidence-one-shot-seed0.json").read_text())
    seq = json.loads((exp / "runs" / "digits-resnet18-scrub-confidence-sequential-seed0.json").read_text())
    assert one["record"]["forgotten"] == sum(s["forget_size"] for s in seq["record"]["requests"])
    # ... and is scored against the same retrained model as the last request
    last = seq["record"]["requests"][-1]["retrain"]
    assert one["record"]["requests"][0]["retrain"]["retain_acc"] == last["retain_acc"]


def test_intervals_come_from_the_seeds_actually_run(runs):
    exp = runs["study_dir"]
    files = (exp / "runs").glob("digits-resnet18-neggrad_plus-confidence-sequential-seed*.json")
    study_runs = [json.loads(p.read_text()) for p in files]
    assert sorted(r["seed"] for r in study_runs) == [0, 1]
    vals = [r["record"]["tow"] for r in study_runs]
    mean = sum(vals) / 2
    half = stats.t.ppf(0.975, df=1) * stats.tstd(vals) / 2 ** 0.5
    row = next(ln for ln in (exp / "report.md").read_text().splitlines()
               if ln.startswith("| neggrad_plus (confidence) | sequential |"))
    assert f"{mean:.4f} [{mean - half:.4f}, {mean + half:.4f}]" in row, row


def test_a_second_study_run_resumes_with_nothing_left(runs):
    first, again = runs["study"], runs["study_again"]
    assert again.returncode == 0, again.stderr[-2000:]
    assert "6 cells, 6 already done" in again.stdout
    # the first joined the cluster RAY_ADDRESS names; with nothing left the second only rewrites the report: no Ray
    assert "Ray: joined" in first.stdout + first.stderr and not again.ray_started, again.stderr[-2000:]
