"""What Ray's dashboard and Prometheus see of a search, on a real `ray start --head` cluster (127.0.0.1, token
auth, dashboard on, `--metrics-export-port`), with the search CLI joining it by `--address`:

- the Tasks page (`ray list tasks`) names the prepare, final and study tasks after what they build, and Ray's
  own task metric (`ray_tasks`, what Grafana charts) carries the same names;
- the head's metrics endpoint serves the search's gauges in Prometheus' text format beside Ray's own, with
  values that agree with the search's trials.csv: every trial counted once by how it ended, the best
  objective the best completed trial's, trials seen running and unlearning epochs per second above zero;
- the Grafana dashboard shipped in docs/ queries only metrics that the endpoint serves.

The search uses an artifact store of its own: the prepare tasks run only for models a store lacks. A one-cell
study (`python -m tuner.study`) follows it on the same cluster.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))  # --import-mode=importlib puts nothing on sys.path
from ray_nodes import RAY, Cluster  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "docs" / "grafana-search-dashboard.json"
NUM_SAMPLES = 2
ARGS = ["--num-samples", str(NUM_SAMPLES), "--train-epochs", "3", "--width", "0.125", "--final-seeds", "2",
        "--top-k", "1"]
# one cell: vanilla SCRUB, seed 0, one request of random examples (no memorization proxy to compute)
STUDY = ["--preset", "smoke", "--methods", "scrub", "--seeds", "0", "--requests", "1", "--forget", "random"]
PREFIX = "ray_unlearn_search_"


class Scraper(threading.Thread):
    """Reads http://127.0.0.1:PORT/metrics every `every` seconds while the search runs; keeps every sample of
    the project's metrics as (time, name, labels, value), the names of every metric family served, and the task
    names in Ray's own task counts (`ray_tasks`)."""

    def __init__(self, port: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.url, self.every = f"http://127.0.0.1:{port}/metrics", every
        self.samples: list[tuple[float, str, dict, float]] = []
        self.families: set[str] = set()
        self.task_names: set[str] = set()
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                text = urllib.request.urlopen(self.url, timeout=5).read().decode()
            except OSError:
                text = ""
            now = time.monotonic()
            for family in text_string_to_metric_families(text):
                self.families.add(family.name)
                for s in family.samples:
                    if s.name.startswith(PREFIX):
                        self.samples.append((now, s.name, dict(s.labels), s.value))
                    elif s.name == "ray_tasks":
                        self.task_names.add(s.labels.get("Name", ""))
            self.stop.wait(self.every)

    def last(self, name: str, **labels) -> float | None:
        """The latest value of the series `name` whose labels include `labels`."""
        values = [v for _, n, lab, v in self.samples if n == name and labels.items() <= lab.items()]
        return values[-1] if values else None

    def seen(self, name: str, **labels) -> list[float]:
        return [v for _, n, lab, v in self.samples if n == name and labels.items() <= lab.items()]


def metrics_port(cluster: Cluster) -> int:
    head = cluster.nodes[0]
    return int(next(a for a in head.proc.args if a.startswith("--metrics-export-port=")).split("=", 1)[1])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One search (2 trials) against a head with the dashboard on, its metrics endpoint scraped throughout; then
    a one-cell study on the same cluster."""
    root = tmp_path_factory.mktemp("monitoring")
    cluster = Cluster()
    try:
        cluster.start_head(num_cpus=2, dashboard=True)
        scraper = Scraper(metrics_port(cluster))
        scraper.start()
        t0 = time.monotonic()
        # Ray sends a process's metrics to its node every 10 s by default; every 0.5 s here, so the last state
        # of the search is on the endpoint before its driver exits.
        proc = subprocess.run(
            [sys.executable, "-m", "tuner.search", "scrub", "--address", cluster.address, "--storage", str(root),
             "--store", str(root / "artifacts"), "--name", "mon", *ARGS],
            cwd=root, env={**cluster.env, "RAY_metrics_report_interval_ms": "500"}, capture_output=True, text=True,
            timeout=600)
        wall = time.monotonic() - t0
        print(f"search against the cluster: {wall:.0f} s")
        time.sleep(1.5)  # the driver's last export, scraped
        scraper.stop.set()
        scraper.join(timeout=10)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        study = subprocess.run(
            [sys.executable, "-m", "tuner.study", *STUDY, "--address", cluster.address, "--storage", str(root),
             "--store", str(root / "artifacts"), "--name", "cells"],
            cwd=root, env=cluster.env, capture_output=True, text=True, timeout=600)
        assert study.returncode == 0, study.stdout[-4000:] + study.stderr[-4000:]
        print(f"one-cell study: {time.monotonic() - t0 - wall:.0f} s")
        listed = subprocess.run([RAY, "list", "tasks", "--address", cluster.dashboard_url, "--format", "json",
                                 "--limit", "10000"], env=cluster.env, capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0, listed.stderr
        exp = root / "mon"
        yield {"tasks": json.loads(listed.stdout), "scraper": scraper,
               "search": json.loads((exp / "search.json").read_text()),
               "trials": pd.read_csv(exp / "trials.csv", dtype={"trial_id": str})}
    finally:
        cluster.shutdown()


def test_prepare_final_and_study_tasks_are_named_after_what_they_build(run):
    names = {t["name"] for t in run["tasks"]}
    seeds = [run["search"]["search_seed"], *run["search"]["final_seeds"]]
    assert {f"prepare digits/resnet18 seed {s}" for s in seeds} <= names, sorted(names)
    assert {f"final digits/resnet18 paper seed {s}" for s in run["search"]["final_seeds"]} <= names, sorted(names)
    finals = [n for n in names if n.startswith("final ")]
    assert all(re.fullmatch(r"final digits/resnet18 (paper|trial \w+) seed \d+", n) for n in finals), finals
    assert "study digits/resnet18 scrub seed 0" in names, sorted(names)
    # the functions' own names would mean a task went unnamed
    assert not names & {"_prepare_one", "_run_one", "_run_cell"}, sorted(names)
    assert {f"prepare digits/resnet18 seed {s}" for s in seeds} <= run["scraper"].task_names


def test_search_metrics_are_on_the_nodes_metrics_endpoint(run):
    scraper, trials = run["scraper"], run["trials"]
    pair = {"dataset": "digits", "arch": "resnet18"}
    # how every trial ended, as trials.csv says, and no trial still running
    by_status = trials["status"].value_counts().to_dict()
    ended = {s: scraper.last(f"{PREFIX}trials", status=s, **pair) for s in ("completed", "stopped", "diverged",
                                                                             "error")}
    assert ended == {s: float(by_status.get(s, 0)) for s in ended}, (ended, by_status)
    assert sum(ended.values()) == NUM_SAMPLES
    assert max(scraper.seen(f"{PREFIX}trials", status="running", **pair)) >= 1
    assert scraper.last(f"{PREFIX}trials", status="running", **pair) == 0
    # the best objective: the best completed trial's final selection metrics, each in [0, 1]
    completed = trials[trials["status"] == "completed"]
    assert len(completed) >= 1, trials
    for k in ("sel_tow", "sel_tow_mia"):
        best = scraper.last(f"{PREFIX}best_objective", objective=k, **pair)
        assert best is not None and 0 <= best <= 1
        assert best == pytest.approx(completed[k].max(), abs=1e-9), (k, best, completed[k].tolist())
    assert max(scraper.seen(f"{PREFIX}epochs_per_second", **pair)) > 0


def test_grafana_dashboard_queries_metrics_the_endpoint_serves(run):
    """The project's gauges and Ray's own (GPU metrics aside: this cluster has no GPU)."""
    exprs = [t["expr"] for p in json.loads(GRAFANA.read_text())["panels"] for t in p.get("targets", [])]
    queried = set(re.findall(r"\bray_\w+", " ".join(exprs))) - {"ray_node_gpus_utilization"}
    assert {n for n in queried if n.startswith(PREFIX)} == {f"{PREFIX}{m}" for m in ("trials", "best_objective",
                                                                                    "epochs_per_second")}
    assert queried <= run["scraper"].families, queried - run["scraper"].families
