"""Multi-node for real, on one machine: a head and worker nodes as separate `ray start` processes, the search
CLI joining them with `--address`, and faults injected by SIGKILL.

- Trials spread over the nodes (each node has 1 CPU, 2 trials run at once) — seen through the `node_id` every
  report carries, per epoch in each trial's result.json and per trial in trials.csv.
- Killing the worker node mid-trial: the trial is retried on the head from its last checkpoint (the epoch
  after the last one the worker reported), and the search completes with every trial in trials.csv and in the
  Optuna study.
- SIGKILL of the driver once a trial is COMPLETE in the study and another has checkpointed: `--resume` finishes
  the search; study trials COMPLETE before the kill keep their values, interrupted trials continue from their
  checkpoints, and the study ends with exactly one COMPLETE Optuna trial per Tune trial (the phantom RUNNING
  trial the killed driver had asked for after its last snapshot is closed as FAIL).
- Token auth is on for the test cluster (`RAY_AUTH_MODE=token`, a private token): a driver with another token is
  refused with one error line. (An address nothing answers: tests/tuner/test_search.py.)

Nodes are killed by process session (see ray_nodes.py), never with `ray stop`, so another test's Ray survives.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # --import-mode=importlib puts nothing on sys.path
from ray_nodes import Cluster, kill_session  # noqa: E402

from .conftest import tail, wait_for  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NUM_SAMPLES = 2  # the two --points of each search: no sampled trial, whose length nobody controls
# --top-k 0: the finals re-run only the paper's config (what they publish is tested in test_search.py)
SMALL = ["--num-samples", str(NUM_SAMPLES), "--train-epochs", "3", "--width", "0.125", "--final-seeds", "2",
         "--top-k", "0", "--no-dashboard", "--max-failures", "2"]
STUDY = "digits-resnet18"
SEARCH_TIMEOUT = 420


# ---------------------------------------------------------------------------------------------------- helpers

def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tuner.search", *args]


def records(exp: Path, pattern: str = f"tune-{STUDY}/*/result.json") -> dict[str, list[dict]]:
    """Per Tune trial id: every result it reported (result.json lines, in order), across retries/resumes.

    Under --storage these files trail the driver: Tune writes them in a driver-side staging folder and syncs
    that up with each experiment snapshot (every ~10 s, or after 2 checkpoints of a trial)."""
    out = {}
    for f in exp.glob(pattern):
        rows = []
        for line in f.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written right now
                break
        if rows:
            out[rows[0]["trial_id"]] = rows
    return out


def live_records(cluster: Cluster) -> dict[str, list[dict]]:
    """The driver's own, up-to-date copy of the result.json files: its staging folder in the Ray session of
    the node it joined (under that node's --temp-dir)."""
    return records(cluster.root, f"*/session_*/artifacts/*/tune-{STUDY}/driver_artifacts/*/result.json")


def study_trials(exp: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # each experiment has its own study: NAME/DATASET-ARCH
    return optuna.load_study(study_name=f"{exp.name}/{STUDY}", storage=f"sqlite:///{exp}/optuna.db").trials


def complete_numbers(exp: Path) -> list[int] | None:
    """COMPLETE trial numbers in the study, read-only while the driver writes it (optuna.load_study would
    create the schema in a database the driver has not made yet)."""
    db = exp / "optuna.db"
    if not db.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)) as con:
            return [n for (n,) in con.execute("SELECT number FROM trials WHERE state = 'COMPLETE'")]
    except sqlite3.Error:  # no tables yet, or locked
        return None


def run_to_end(proc: subprocess.Popen, log: Path, timeout: float = SEARCH_TIMEOUT) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_session(proc.pid)
        pytest.fail(f"search still running after {timeout}s:\n{tail(log)}")


def start_search(cluster: Cluster, cwd: Path, log: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    with open(log, "a") as f:  # its own session: a kill hits the driver and nothing else
        # a joined driver waits two metrics exports before it exits (tuner/search_metrics.py): 2 x 0.5 s here
        return subprocess.Popen(cli(*args), cwd=cwd, env={**cluster.env, "RAY_metrics_report_interval_ms": "500",
                                                          **(env or {})}, stdout=f,
                                stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


LOST = "its row comes from its saved state"  # tuner/lost_trials.py, said by the resumed driver


def check_nothing_lost(exp: Path, same_values: bool = True, lost: int = 0) -> pd.DataFrame:
    """trials.csv holds every trial once, none errored; the study holds exactly one COMPLETE trial for each
    (same config; same objective values too unless `same_values=False`) and nothing left RUNNING. A FAIL is
    allowed only as the closed phantom of a driver killed between Optuna's ask and Tune's next snapshot;
    `lost` trials more than --num-samples only as trials that driver started and finished after that snapshot
    (Tune lost them; their rows come back from their saved states, and the resumed Tune runs its own)."""
    df = pd.read_csv(exp / "trials.csv")
    assert len(df) == NUM_SAMPLES + lost and df["trial_id"].is_unique, df.to_string()
    assert set(df["status"]) <= {"completed", "stopped", "diverged"}, df[["trial_id", "status", "reason"]]
    trials = study_trials(exp)
    states = [t.state.name for t in trials]
    # COMPLETE: ran its schedule; PRUNED: stopped by ASHA (Optuna never gets its early values)
    stopped = int((df["status"] == "stopped").sum())
    assert (states.count("COMPLETE"), states.count("PRUNED")) == (len(df) - stopped, stopped), (states, df)
    assert "RUNNING" not in states, states
    if same_values:
        assert "FAIL" not in states, states
    complete = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert sorted(t.params["lr"] for t in complete) == sorted(json.loads(p)["lr"] for p in df["params"])
    if same_values:
        in_study = sorted(tuple(round(v, 9) for v in t.values) for t in complete if t.state.name == "COMPLETE")
        in_csv = sorted((round(r.sel_tow, 9), round(r.sel_tow_mia, 9)) for r in df.itertuples()
                        if r.status != "stopped")
        assert in_study == in_csv
    return df


# ---------------------------------------------------------------------------------------------------- fixtures

SLOW = {"lr": 0.005, "epochs": 10, "max_steps": 1, "alpha": 0.5, "gamma": 1.0, "temperature": 4.0,
        "forget_batch_size": 16, "retain_batch_size": 64}
# Max passes in all of its 3 epochs at the top learning rate: it ends fast with a ToW near 0 (or diverges), so at
# ASHA's first rung it is below any sane trial and never gets the slow one stopped.
BAD_SHORT = {"lr": 0.1, "epochs": 3, "max_steps": 3, "alpha": 1e-5, "gamma": 1e-5, "temperature": 8.0,
             "forget_batch_size": 16, "retain_batch_size": 256}


def slow_points(root: Path, second: dict | None = None) -> Path:
    """The configs tried first: a slow one (small batches; one max pass, so it reports from epoch 2 = 20 % of its
    schedule, below ASHA's first rung), long enough to be caught mid-run, and a second one (default: another
    slow one)."""
    path = root / "slow.json"
    path.write_text(json.dumps([SLOW, second or {**SLOW, "lr": 0.004}]))
    return path


@pytest.fixture(scope="module")
def cluster():
    """Head node: 1 CPU, token auth with a private token, its own ports and temp dir."""
    c = Cluster()
    try:
        c.start_head(num_cpus=1)
        yield c
    finally:
        c.shutdown()


@pytest.fixture(scope="module")
def worker_kill_run(cluster, shared_store, tmp_path_factory):
    """A 2-node search (head + worker, 1 CPU each) whose worker node is SIGKILLed right after a trial running
    on it reported (and checkpointed) its first epoch."""
    root = tmp_path_factory.mktemp("wk")
    worker = cluster.add_node("w1", num_cpus=1, resources={"worker_node": 1})
    log = root / "search.log"
    proc = start_search(cluster, root, log, "scrub", "--address", cluster.address, "--storage", str(root),
                        "--store", str(shared_store), "--name", "wk", *SMALL, "--points", str(slow_points(root)))
    exp = root / "wk"
    try:
        def running_on_worker():  # saved its state on the worker, not done, and below ASHA's first rung (30 %)
            return next((tid for tid, rows in live_records(cluster).items()
                         if rows[-1]["node_id"] == worker.node_id and not rows[-1]["final"]
                         and rows[-1]["progress"] < 30), None)

        victim = wait_for(running_on_worker, 300, "trial checkpointed on the worker node", proc, log, every=0.1)
        worker.kill()
        killed = {tid: [r["epoch"] for r in rows if r["node_id"] == worker.node_id]
                  for tid, rows in live_records(cluster).items()}
        rc = run_to_end(proc, log)
    finally:
        kill_session(proc.pid)
        worker.kill()
    out = {"exp": exp, "rc": rc, "log": log, "head": cluster.nodes[0].node_id, "worker": worker.node_id,
           "victim": victim, "worker_epochs_at_kill": killed, "worker_alive": worker.alive()}
    (root / "fixture.json").write_text(json.dumps(out, default=str, indent=1))
    return out


@pytest.fixture(scope="module")
def driver_kill_run(cluster, shared_store, tmp_path_factory):
    """A 2-node search whose driver is SIGKILLed after a trial has reported 3 more times than the experiment
    snapshot that is then put back in place; then `--resume` on the same cluster.

    This is the situation that made Tune restore a trial from a checkpoint `CheckpointConfig(num_to_keep=2)` had
    already deleted (more reports between two snapshots than checkpoints kept), so the trial ended in ERROR. It
    is made deterministically: the snapshot files are copied while the slow trial is at its first reports, and
    restored after the kill. Trials now keep their own latest state (tuner/trial_state.py) and go on from it."""
    root = tmp_path_factory.mktemp("dk")
    worker = cluster.add_node("w2", num_cpus=1, resources={"worker_node": 1})
    log = root / "search.log"
    args = ["scrub", "--address", cluster.address, "--storage", str(root), "--store", str(shared_store), "--name", "dk",
            "--points", str(slow_points(root, second=BAD_SHORT))]
    exp = root / "dk"
    tune_dir = exp / f"tune-{STUDY}"
    proc = start_search(cluster, root, log, *args, *SMALL)
    try:
        def snapshot_holding_a_young_trial():
            snaps = sorted(tune_dir.glob("experiment_state-*.json"))
            if not snaps:
                return None
            held = snaps[-1].read_text()
            for tid, rows in live_records(cluster).items():
                if tid in held and not rows[-1]["final"] and rows[-1]["progress"] <= 30:  # the 10-epoch point
                    files = {p.name: p.read_bytes() for p in tune_dir.iterdir()
                             if p.is_file() and "state" in p.name}  # experiment, searcher, search-gen state
                    return tid, len(rows), files
            return None

        victim, reports_then, snapshot = wait_for(snapshot_holding_a_young_trial, 300, "a snapshot holding a "
                                                  "trial at its first reports", proc, log, every=0.1)

        def three_more_reports():
            rows = live_records(cluster).get(victim, [])
            return complete_numbers(exp) if len(rows) >= reports_then + 3 and not rows[-1]["final"] else None

        done = wait_for(three_more_reports, 300, "3 more reports of the young trial", proc, log, every=0.1)
        before = live_records(cluster)  # what the driver had received (its staging copy) just before the kill
        killed_at = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        killed_rc = proc.returncode
        kill_session(proc.pid)
        for name in [p.name for p in tune_dir.iterdir() if p.is_file() and "state" in p.name]:
            (tune_dir / name).unlink()
        for name, blob in snapshot.items():  # the experiment as that older snapshot left it
            (tune_dir / name).write_bytes(blob)
        done_before = {t.number: tuple(t.values) for t in study_trials(exp) if t.number in done}
        with open(log, "a") as f:
            f.write("\n===== driver SIGKILLed; --resume =====\n")
        proc = start_search(cluster, root, log, *args, "--resume")
        rc = run_to_end(proc, log)
    finally:
        kill_session(proc.pid)
        worker.kill()
    out = {"exp": exp, "rc": rc, "killed_rc": killed_rc, "killed_at": killed_at, "log": log, "victim": victim,
           "done_before": done_before, "records_before": before}
    (root / "fixture.json").write_text(json.dumps(out, default=str, indent=1))
    return out


# ---------------------------------------------------------------------------------------------------- tests

def test_search_completes_after_worker_node_loss(worker_kill_run):
    r = worker_kill_run
    assert r["rc"] == 0, tail(r["log"])
    assert not r["worker_alive"]
    assert (r["exp"] / "best_configs.json").exists()


def test_trials_ran_on_both_nodes(worker_kill_run):
    r = worker_kill_run
    nodes = {row["node_id"] for rows in records(r["exp"]).values() for row in rows}
    assert nodes == {r["head"], r["worker"]}, (nodes, r["head"], r["worker"])
    df = pd.read_csv(r["exp"] / "trials.csv")
    assert set(df["node_id"]) <= {r["head"], r["worker"]}, df["node_id"]


def test_worker_trial_retried_on_head_from_its_checkpoint(worker_kill_run):
    r = worker_kill_run
    rows = records(r["exp"])[r["victim"]]
    on_worker = [x["epoch"] for x in rows if x["node_id"] == r["worker"]]
    after = [x for x in rows if x["node_id"] != r["worker"]]
    at_kill = r["worker_epochs_at_kill"][r["victim"]]
    assert at_kill and on_worker[:len(at_kill)] == at_kill, (on_worker, at_kill)
    assert after, f"trial {r['victim']} was not retried after its node died:\n{tail(r['log'])}"
    assert {x["node_id"] for x in after} == {r["head"]}
    assert rows.index(after[0]) == len(on_worker), "the retry must come after the worker's epochs"
    assert after[0]["epoch"] == on_worker[-1] + 1, ([x["epoch"] for x in rows], "retry restarted, not resumed")


def test_worker_node_loss_loses_no_trial(worker_kill_run):
    check_nothing_lost(worker_kill_run["exp"])


def test_resume_after_driver_sigkill_completes(driver_kill_run):
    r = driver_kill_run
    assert r["killed_rc"] == -signal.SIGKILL
    assert r["rc"] == 0, tail(r["log"])
    log = tail(r["log"], 10**6)
    assert "resuming" in log
    assert (r["exp"] / "best_configs.json").exists()
    # its finals (the paper's config, --top-k 0) are the worker-kill search's, on the same data and seeds
    assert log.count("(the same run's stored result)") == 2, log[-3000:]


def test_resume_keeps_completed_trials_and_continues_checkpointed_ones(driver_kill_run):
    r = driver_kill_run
    after = records(r["exp"])
    trials = study_trials(r["exp"])
    assert r["done_before"], "no trial had completed before the kill"
    for number, values in r["done_before"].items():  # COMPLETE before the kill: kept as it was
        assert trials[number].state.name == "COMPLETE" and tuple(trials[number].values) == tuple(values)
    # The trial with 3+ reports since the restored snapshot goes on from its own saved state under the new driver:
    # not from epoch 1, never skipping an epoch (its last saved row is reported again first).
    # Rows of the new driver are those reported after the kill (pids wrap and may repeat; the nodes are the same).
    rows = r["records_before"][r["victim"]]
    resumed = [x for x in after.get(r["victim"], []) if x["timestamp"] > r["killed_at"]]
    assert resumed, (f"trial {r['victim']} did not go on after --resume", {t: [x["epoch"] for x in v]
                                                                          for t, v in after.items()})
    assert 3 < resumed[0]["epoch"] <= rows[-1]["epoch"] + 1, ([x["epoch"] for x in rows],
                                                              [x["epoch"] for x in resumed])
    assert not list((r["exp"] / "trial-state").glob("*.pt")), "saved states are removed once the search ends"


def test_resume_after_driver_sigkill_loses_no_trial(driver_kill_run):
    # A trial that ended in the seconds between Tune's last snapshot and the kill is run again from its last
    # snapshotted checkpoint; Optuna keeps its first values ("Cannot tell a COMPLETE trial"), so the study and
    # trials.csv may disagree on that trial's values, never on which trials exist.
    log = tail(driver_kill_run["log"], 10**7)
    check_nothing_lost(driver_kill_run["exp"], same_values=False, lost=log.count(LOST))
    for t in study_trials(driver_kill_run["exp"]):
        if t.state.name == "FAIL":  # closed by the resumed driver, and said so
            assert f"optuna trial {t.number}: RUNNING without a Tune trial" in log


def test_token_auth_refuses_a_driver_with_another_token(cluster, tmp_path):
    other = tmp_path / "other_token"
    other.write_text("0" * 64)
    env = {**cluster.env, "RAY_AUTH_TOKEN_PATH": str(other),
           "RAY_NUM_REDIS_GET_RETRIES": "2"}  # Ray retries the refused connection ~1 s apart (20 by default)
    p = subprocess.run(cli("scrub", "--address", cluster.address, "--storage", str(tmp_path)), cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 2, p.stderr[-3000:]
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot join the Ray cluster at {cluster.address}") and "token" in last, last
    assert not (tmp_path / "trials.csv").exists()
