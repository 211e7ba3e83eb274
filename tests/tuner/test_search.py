"""`python -m tuner.search` end to end, on a real local Ray, a real S3-compatible server and real torch training.

One search feeds most tests (a subprocess with its own Ray): SCRUB on digits with the default objective (ToW and
ToW-MIA, Pareto front) and 4 trials, 1 CPU + 0.5 of a logical GPU per trial on a Ray started with
`--local-gpus 1`. Its `--storage` is an object store (moto's server mode on loopback): everything it writes lands
in the bucket — Tune's experiment, the artifact store, trial states, prepare and final records, the Optuna study
(a journal, with no --optuna-storage given) and the outputs — nothing on the local disk. Its first three trials
are `--points` (a diverging config, a quick one and a slow one), the fourth the paper's config. It is
interrupted with SIGTERM (what `ray job stop` and batch schedulers send; a search treats it as Ctrl+C) once
every trial has started, one has finished and the slow one is mid-run with its state saved (Tune then marks the
running trials TERMINATED, which must not pass for finished), then `--resume`d. Outputs, Pareto front, the
selection objective, warm start, fractional-GPU concurrency, divergence and the resume are all read from it,
through a copy of the bucket's experiment folder.

The bad-input cases run as parallel subprocesses; none of them may leave an experiment folder behind.
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import fsspec
import optuna
import pandas as pd
import pytest

import search_spaces
from tuner.trial_state import TrialState

from .conftest import interrupt_when

FAST = ["--num-samples", "4", "--train-epochs", "3", "--width", "0.125", "--final-seeds", "2", "--top-k", "1",
        "--no-dashboard"]
NUM_SAMPLES = 4
STATUSES = {"completed", "stopped", "diverged", "error"}
STUDY = "both/digits-resnet18"  # the experiment's name / (dataset, arch)
TUNE_DIR = "tune-digits-resnet18"
# Max passes in every epoch at the space's top learning rate with almost no retain terms: the forget KL explodes.
DIVERGING = {"lr": 0.1, "epochs": 10, "max_steps": 10, "alpha": 1e-5, "gamma": 1e-5, "temperature": 8.0,
             "forget_batch_size": 16, "retain_batch_size": 256}
# Two epochs of large batches: done in a second or two, so the third point starts early.
QUICK = {"lr": 0.005, "epochs": 2, "max_steps": 1, "alpha": 0.5, "gamma": 1.0, "temperature": 4.0,
         "forget_batch_size": 256, "retain_batch_size": 256}
# Small batches and one max pass: several seconds, reporting from epoch 2 (20 % of its schedule, below ASHA's
# first rung), so it can be caught mid-run.
SLOW = {"lr": 0.005, "epochs": 10, "max_steps": 1, "alpha": 0.5, "gamma": 1.0, "temperature": 4.0,
        "forget_batch_size": 16, "retain_batch_size": 64}


# --- helpers -------------------------------------------------------------------------------------------------
def describe(proc, log: Path | None = None) -> str:
    out = log.read_text() if log else f"{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    return f"exit {proc.returncode}\n{out[-6000:]}"


def read_trials(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={"trial_id": str, "reason": str})
    df["reason"] = df["reason"].fillna("")
    return df


def trial_results(tune_dir: Path) -> dict[str, dict]:
    """trial_id -> {"dir": its folder, "rows": its result.json lines} for every trial that reported."""
    out = {}
    for f in sorted(tune_dir.glob("*/result.json")):
        rows = []
        for line in f.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written while a running search is polled
                break
        if rows:
            out[rows[0]["trial_id"]] = {"dir": f.parent, "rows": rows}
    return out


def load_study(exp: Path) -> optuna.Study:
    """The study in a copy of the experiment folder: the journal the search kept in the bucket."""
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=STUDY,
                             storage=optuna.storages.JournalStorage(JournalFileBackend(str(exp / "optuna.log"))))


def unfinished(study: optuna.Study) -> list[int]:
    return [t.number for t in study.trials if t.state in (optuna.trial.TrialState.RUNNING,
                                                          optuna.trial.TrialState.WAITING)]


def stderr_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def dominated(a, others) -> bool:
    return any(b[0] >= a[0] and b[1] >= a[1] and (b[0] > a[0] or b[1] > a[1]) for b in others)


# The points run first, then the paper's config (--num-samples 4: no sampled trial); two at a time, so the slow
# point starts when the first of the others ends and is early in its schedule when the last trial starts.
POINTS = [DIVERGING, QUICK, SLOW]


# --- the searches ----------------------------------------------------------------------------------------------
BUCKET_RUNS = "unlearn/runs"  # --storage s3://unlearn/runs
EXP = f"{BUCKET_RUNS}/both"


def s3():
    return fsspec.filesystem("s3", skip_instance_cache=True)


def saved_states() -> dict[str, dict]:
    """trial id -> the last report its saved state holds, read live from the bucket as a trial reads it."""
    rows = {}
    for trial_id in TrialState.saved_ids(f"s3://{EXP}/trial-state"):
        try:
            rows[trial_id] = TrialState(f"s3://{EXP}/trial-state", trial_id).load()["row"]
        except Exception:  # noqa: BLE001  being replaced right now
            continue
    return rows


def mid_run(rows: dict[str, dict]) -> list[str]:
    """Trials whose latest state is saved below ASHA's first rung (30 % of their schedule), so no scheduler can
    have stopped them."""
    return [t for t, r in rows.items() if not r["final"] and r["progress"] < 30]


def copy_of(fs, folder: Path) -> Path:
    """The experiment folder as it is in the bucket now, copied to `folder`/both."""
    fs.invalidate_cache()
    fs.get(EXP, str(folder / "both"), recursive=True)
    return folder / "both"


@pytest.fixture(scope="module")
def both_run(s3_server, search_root, search_cli, search_popen, tmp_path_factory):
    """The default-shaped search in the bucket, interrupted with SIGTERM mid-run, then `--resume`d."""
    fs = s3()
    fs.mkdir(BUCKET_RUNS.split("/")[0])
    points = search_root / "points.json"
    points.write_text(json.dumps(POINTS))
    log = search_root / "both-interrupted.log"
    proc = search_popen("scrub", "--storage", f"s3://{BUCKET_RUNS}", "--name", "both",
                        *FAST, "--points", str(points), "--local-gpus", "1", "--gpus-per-trial", "0.5",
                        # logical GPUs on a CPU: say where trials compute, as records key on it (a GPU is assumed)
                        "--device", "cpu",
                        "--cpus-per-trial", "1", out=log)
    seen: dict[str, list[str]] = {}

    def interruptible() -> bool:
        """Every trial started (Tune's progress lines say so), one finished, another mid-run below the first rung."""
        started = set(re.findall(r"Trial (\S+) started with configuration", log.read_text(errors="replace")))
        if len(started) < NUM_SAMPLES:
            return False
        rows = saved_states()
        seen["saved"], seen["mid_run"] = set(rows), mid_run(rows)
        return any(r["final"] for r in rows.values()) and bool(seen["mid_run"])

    # every 0.5 s: each look is a listing and reads through the S3 server, which competes for the CPU
    first_rc = interrupt_when(proc, interruptible, log, signal.SIGTERM,
                              "every trial started, one finished and another mid-run", every=0.5)
    fs.invalidate_cache()
    files = set(fs.find(EXP))
    first_exp = copy_of(fs, tmp_path_factory.mktemp("interrupted"))
    first = SimpleNamespace(rc=first_rc, log=log, files=files, saved=seen["saved"], mid_run=seen["mid_run"],
                            results=trial_results(first_exp / TUNE_DIR),
                            trials=read_trials(first_exp / "trials.csv") if (first_exp / "trials.csv").exists()
                            else None,
                            study_trials=len(load_study(first_exp).trials) if (first_exp / "optuna.log").exists()
                            else None,
                            meta=(first_exp / "search.json").read_text())
    resumed = search_cli("scrub", "--storage", f"s3://{BUCKET_RUNS}", "--name", "both", "--resume")
    return SimpleNamespace(first=first, proc=resumed, fs=fs, exp=copy_of(fs, tmp_path_factory.mktemp("resumed")))


@pytest.fixture(scope="module")
def resumed_run(both_run):
    return both_run  # the resume tests read the same search


# --- 1. outputs of the default-shaped search -------------------------------------------------------------------
@pytest.mark.slow
def test_search_writes_outputs_that_agree(both_run):
    proc, exp = both_run.proc, both_run.exp
    assert proc.returncode == 0, describe(proc)
    for name in ("best_configs.json", "best_configs.md", "trials.csv", "optuna.log"):
        assert (exp / name).is_file(), f"{name} missing: {describe(proc)}"
    meta = json.loads((exp / "search.json").read_text())
    assert (meta["settings"]["objective"], meta["settings"]["datasets"], meta["settings"]["archs"]) == \
        ("both", ["digits"], ["resnet18"])

    summary = json.loads((exp / "best_configs.json").read_text())
    md = (exp / "best_configs.md").read_text()
    assert [(s["dataset"], s["arch"]) for s in summary] == [("digits", "resnet18")]
    for s in summary:
        first = next(ln for ln in md.splitlines() if ln.startswith(f"| {s['dataset']} | {s['arch']} |"))
        assert "**recommended" in first and f"| {s['objective']['mean']:.4f} [" in first, md
        assert f"| {s['tow']['mean']:.4f} [" in first, md  # the report (test) view is what the table publishes
        assert (s["label"] == "paper") == (not s["beats_paper"])
        # selection on validation, report on test, over seeds the search never used
        assert meta["search_seed"] not in meta["final_seeds"] and s["seeds"] == meta["final_seeds"]
        assert s["paper"]["seeds"] == s["seeds"] and "(paired, same seeds)" in md

    trials = read_trials(exp / "trials.csv")
    assert len(trials) == NUM_SAMPLES == summary[0]["trials_run"]
    assert trials["trial_id"].is_unique
    assert set(trials["status"]) <= STATUSES, trials["status"].tolist()
    assert all(trials.loc[trials["status"] == "diverged", "reason"].str.strip() != "")
    assert summary[0]["trials"] == {s: int((trials["status"] == s).sum()) for s in STATUSES}

    study = load_study(exp)
    assert len(study.trials) == NUM_SAMPLES
    assert unfinished(study) == [], "trials left RUNNING/WAITING in the Optuna study"
    # What Optuna saw: every trial that ran its whole schedule is COMPLETE with its final (ToW, ToW-MIA) (a
    # diverged one with 0s); every trial ASHA stopped is PRUNED, with no values: early values of a shorter
    # schedule never reach the sampler.
    state = optuna.trial.TrialState
    told = sorted(tuple(t.values) for t in study.trials if t.state == state.COMPLETE)
    ran = trials[trials["status"].isin(["completed", "diverged"])]
    reported = sorted(zip(ran["sel_tow"], ran["sel_tow_mia"]))
    assert len(told) == len(reported)
    for a, b in zip(told, reported):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)
    pruned = [t for t in study.trials if t.state == state.PRUNED]
    assert len(pruned) == int((trials["status"] == "stopped").sum())
    assert all(t.values is None for t in pruned)


# --- 2. Pareto front -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_pareto_front_is_the_non_dominated_completed_trials(both_run):
    proc, exp = both_run.proc, both_run.exp
    assert proc.returncode == 0, describe(proc)
    trials = read_trials(exp / "trials.csv")
    done = trials[trials["status"] == "completed"]
    assert len(done) >= 1, "ASHA always lets the first trial at a rung go on, so one trial completes"
    points = {r.trial_id: (r.sel_tow, r.sel_tow_mia) for r in done.itertuples()}
    expected = {t for t, p in points.items() if not dominated(p, [q for u, q in points.items() if u != t])}

    front = pd.read_csv(exp / "pareto_front.csv", dtype={"trial_id": str})
    assert front["trial_id"].is_unique
    assert set(front["trial_id"]) == expected
    for r in front.itertuples():
        assert (r.sel_tow, r.sel_tow_mia) == pytest.approx(points[r.trial_id], rel=1e-9)
    summary = json.loads((exp / "best_configs.json").read_text())
    assert {p["trial_id"] for p in summary[0]["pareto_front"]} == expected


@pytest.mark.slow
def test_a_trials_objective_is_its_selection_metrics_recomputed(both_run):
    """A completed trial's reported objective = the run driver's selection view of the same config, recomputed
    here in-process on the same seed (validation data only; the test split is never scored in a trial)."""
    from unlearn_core.environment import use_cpus
    from unlearn_core.run import start
    from unlearn_core.spec import ExperimentSpec

    use_cpus(1)  # as the trial (1 CPU): the same float reductions, hence the same SGD trajectory
    proc, exp = both_run.proc, both_run.exp
    assert proc.returncode == 0, describe(proc)
    meta = json.loads((exp / "search.json").read_text())
    trials = read_trials(exp / "trials.csv")
    done = trials[trials["status"] == "completed"]
    r = min(done.itertuples(), key=lambda t: json.loads(t.params)["epochs"])  # the shortest one to recompute
    st = meta["settings"]
    spec = ExperimentSpec(dataset="digits", arch="resnet18", width=st["width"], seed=st["search_seed"],
                          train_epochs=st["train_epochs"], store=f"s3://{BUCKET_RUNS}/artifacts", device="cpu",
                          forget=st["forget"], forget_size=st["forget_size"], proxy=st["proxy"])
    rec = start(spec, "scrub", json.loads(r.params), views=("selection",)).run()
    assert (rec["sel_tow"], rec["sel_tow_mia"]) == pytest.approx((r.sel_tow, r.sel_tow_mia), rel=1e-6)
    assert not {"tow", "tow_mia", "test_acc", "mia"} & set(trials.columns)


# --- 3. fractional GPUs ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_fractional_gpus_run_two_trials_at_once(both_run):
    proc, exp = both_run.proc, both_run.exp
    assert proc.returncode == 0, describe(proc)
    meta = json.loads((exp / "search.json").read_text())
    assert meta["resources"] == {"cpus_per_trial": 1, "gpus_per_trial": 0.5, "max_concurrent": 2}
    results = trial_results(exp / TUNE_DIR)
    assert len(results) == NUM_SAMPLES
    # [start, end] of each trial: its first report minus that epoch's time, to its last report. `timestamp` is
    # whole seconds, so sequential trials can appear to overlap by up to 1 s; demand more than 2 s.
    spans = {t: (r["rows"][0]["timestamp"] - r["rows"][0]["time_this_iter_s"], r["rows"][-1]["timestamp"])
             for t, r in results.items()}
    ids = sorted(spans)
    overlaps = {(a, b): min(spans[a][1], spans[b][1]) - max(spans[a][0], spans[b][0])
                for i, a in enumerate(ids) for b in ids[i + 1:]}
    (a, b), best = max(overlaps.items(), key=lambda kv: kv[1])
    assert best > 2, f"no two trials ran at once: {spans}"
    assert results[a]["rows"][0]["pid"] != results[b]["rows"][0]["pid"]


# --- 4. interrupt + resume ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_interrupted_search_resumes_without_losing_or_rerunning_trials(resumed_run):
    first, proc, exp = resumed_run.first, resumed_run.proc, resumed_run.exp
    assert first.rc == 130, f"SIGTERM should stop the search with exit 130: {first.rc}\n{first.log.read_text()[-4000:]}"
    assert first.trials is not None, "trials.csv is written when the search is interrupted"
    log = first.log.read_text()
    assert "--resume" in log and "search interrupted; continue with: python -m tuner.search scrub --name both" in log
    assert not any("best_configs" in f for f in first.files), "an interrupted search published best_configs"
    # Every state saved before the signal is kept. (The last trial may not have reported yet: the paper's
    # config reports from epoch 6, after its max phase, so it has no state to keep when it is that late.)
    kept = {Path(f).stem for f in first.files if "/trial-state/" in f}
    assert len(first.saved) >= NUM_SAMPLES - 1 and first.saved <= kept, \
        f"trial states were dropped: {sorted(first.saved - kept)}"
    # Tune marks the trials it stops at the interrupt TERMINATED: they are unfinished, not stopped or completed
    statuses = dict(zip(first.trials["trial_id"], first.trials["status"]))
    assert first.mid_run and all(statuses[t] == "unfinished" for t in first.mid_run), (first.mid_run, statuses)
    assert proc.returncode == 0, describe(proc)
    # the first run prepared the search seed and both final seeds: the resumed one starts no prepare task
    assert proc.stdout.count("already prepared in the store") == 3 and "to build or load" not in proc.stdout

    trials = read_trials(exp / "trials.csv")
    assert len(trials) == NUM_SAMPLES and trials["trial_id"].is_unique, trials[["trial_id", "status"]]
    assert set(first.trials["trial_id"]) == set(trials["trial_id"]), "a trial started before the interrupt is lost"
    assert set(trials["status"]) <= {"completed", "stopped", "diverged"}, trials[["trial_id", "status"]]

    final = trials.set_index("trial_id")
    done_before = first.trials[first.trials["status"].isin(["completed", "diverged"])]
    assert len(done_before) >= 1
    after = trial_results(exp / TUNE_DIR)
    for r in done_before.itertuples():
        f = final.loc[r.trial_id]
        assert (f["status"], f["epoch"], f["reason"]) == (r.status, r.epoch, r.reason)
        assert (f["sel_tow"], f["sel_tow_mia"]) == pytest.approx((r.sel_tow, r.sel_tow_mia), rel=1e-12)
        assert len(after[r.trial_id]["rows"]) == len(first.results[r.trial_id]["rows"]), \
            f"finished trial {r.trial_id} reported again after --resume"
    # A trial that was running at the interrupt continued from its saved state under the new driver: its first
    # epoch there follows its last one before (not epoch 1), and no epoch was reported twice.
    # A row's process is (node, pid): the resumed driver's Ray has new node ids, while pids wrap and repeat.
    old_workers = {(row["node_id"], row["pid"]) for r in first.results.values() for row in r["rows"]}
    restored = []
    for t, r in first.results.items():
        if r["rows"][-1]["final"] or t not in after:
            continue
        new = [row for row in after[t]["rows"] if (row["node_id"], row["pid"]) not in old_workers]
        if new:
            assert 1 < new[0]["epoch"] <= r["rows"][-1]["epoch"] + 1, (t, [x["epoch"] for x in r["rows"]],
                                                                       [x["epoch"] for x in new])
            restored.append(t)
            its = [x["epoch"] for x in new]
            assert its == sorted(set(its)), f"trial {t} repeated epochs after the restore: {its}"
    assert restored, "no trial resumed from its saved state"
    study = load_study(exp)
    assert len(study.trials) == NUM_SAMPLES, \
        f"{len(study.trials)} Optuna trials (before --resume: {first.study_trials})"
    assert unfinished(study) == []
    summary = json.loads((exp / "best_configs.json").read_text())
    assert summary[0]["trials_run"] == NUM_SAMPLES
    assert (exp / "search.json").read_text() == first.meta, "--resume rewrote the experiment's search.json"


@pytest.mark.slow
def test_the_whole_search_is_in_the_bucket(both_run, search_root):
    fs = both_run.fs
    assert both_run.proc.returncode == 0, describe(both_run.proc)
    fs.invalidate_cache()
    names = {p[len(EXP) + 1:] for p in fs.find(EXP)}
    for f in ("search.json", "trials.csv", "best_configs.json", "best_configs.md", "best_configs.csv",
              "pareto_front.csv", "optuna.log"):
        assert f in names, sorted(names)
    assert any(n.startswith(f"{TUNE_DIR}/experiment_state") for n in names), sorted(names)
    assert not any(n.startswith("trial-state/") for n in names), "a finished search keeps no trial weights"
    store = {p.split("/")[3] for p in fs.find(f"{BUCKET_RUNS}/artifacts")}
    assert {"original", "retrain", "prepared", "final"} <= store, store
    assert not (search_root / "runs" / "both").exists() and not (search_root / "unlearn").exists()


# --- 5. divergence ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_diverging_config_is_diverged_with_its_reason(resumed_run):
    proc, exp = resumed_run.proc, resumed_run.exp
    assert proc.returncode == 0, describe(proc)
    trials = read_trials(exp / "trials.csv")
    expected = search_spaces.to_config_params("scrub", DIVERGING)
    rows = [r for r in trials.itertuples() if json.loads(r.params) == expected]
    assert len(rows) == 1, trials[["trial_id", "status", "params"]]
    assert rows[0].status == "diverged" and "diverged" in rows[0].reason, rows[0]
    # --points are evaluated first: Optuna trial 0 is that point.
    study = load_study(exp)
    assert min(study.trials, key=lambda t: t.number).params == DIVERGING
    summary = json.loads((exp / "best_configs.json").read_text())
    assert summary[0]["trials"]["diverged"] >= 1
    assert summary[0]["params"] != expected, "a diverged config cannot win"


# --- 6. warm start --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_points_then_the_paper_config_are_the_first_trials(both_run):
    proc, exp = both_run.proc, both_run.exp
    assert proc.returncode == 0, describe(proc)
    paper = search_spaces.paper_config("scrub", "digits", "resnet18")
    first = sorted(load_study(exp).trials, key=lambda t: t.number)[:len(POINTS) + 1]
    assert [t.params for t in first] == [*POINTS, paper]
    params = [json.loads(p) for p in read_trials(exp / "trials.csv")["params"]]
    assert search_spaces.to_config_params("scrub", paper) in params


# --- 7. the report of a search ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_report_of_the_search_folder(both_run):
    """`python -m tuner.report` on the finished search: Optuna history, Pareto figures and the winners' table."""
    import sys

    import matplotlib.image as mpimg

    from .conftest import cli_env

    assert both_run.proc.returncode == 0, describe(both_run.proc)
    exp = both_run.exp
    res = subprocess.run([sys.executable, "-m", "tuner.report", str(exp)], cwd=exp.parent, env=cli_env(),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("history-tow", "history-tow_mia", "pareto-tow-vs-tow_mia", "pareto-tow-vs-seconds"):
        img = mpimg.imread(exp / "figures" / f"digits-resnet18-{name}.png")
        assert img.size > 0 and img[..., :3].std() > 0.05, name
    report = (exp / "report.md").read_text()
    assert "| digits | resnet18 |" in report and "**recommended" in report and "(paired, same seeds)" in report


# --- 8. bad input ---------------------------------------------------------------------------------------------------
# (args, a word the one error line must contain). Checked in this process (the CLI's `main`, real files, no Ray):
# each is refused before anything heavy starts.
BAD = {
    "unknown algorithm": (["nope"], "nope"),
    "unknown objective": (["scrub", "--objective", "nope"], "--objective"),
    "unknown dataset": (["scrub", "--dataset", "nope"], "--dataset"),
    "unknown arch": (["scrub", "--arch", "nope"], "--arch"),
    "gpus-per-trial 1.5": (["scrub", "--gpus-per-trial", "1.5"], "--gpus-per-trial"),
    "resume missing": (["scrub", "--resume", "--name", "missing"], "missing"),
    "unreachable address": (["scrub", "--address", "127.0.0.1:1"], "127.0.0.1:1"),
    "gpus without gpus": (["scrub", "--gpus-per-trial", "0.5", "--no-dashboard"], "GPU"),
}
# The same, as whole processes run side by side (import-time noise on stderr counts too), plus the interpreter
# start-up baseline (--help).
CLI_CASES = ("unknown algorithm", "unreachable address")


@pytest.fixture(scope="module")
def cli_failures(search_root, search_popen):
    cases = {k: BAD[k][0] for k in CLI_CASES}
    cases["help"] = ["--help"]
    procs = {}
    for key, args in cases.items():
        d = search_root / "cli" / key.replace(" ", "_")
        d.mkdir(parents=True)
        storage = d / "runs"
        procs[key] = (search_popen(*args, "--storage", str(storage), out=d / "out", err=d / "err"), d, storage)
    out = {}
    for key, (p, d, storage) in procs.items():
        try:
            p.wait(timeout=300)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        proc = subprocess.CompletedProcess(p.args, p.returncode, (d / "out").read_text(), (d / "err").read_text())
        proc.wall = time.monotonic() - p.started
        out[key] = (proc, storage)
    return out


def _main(argv: list[str]) -> int:
    from tuner.search import main

    try:
        return main(argv)
    except SystemExit as e:  # argparse
        return e.code


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_fails_in_one_line_and_leaves_nothing(case, tmp_path, capfd):
    import torch

    if case == "gpus without gpus" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    storage = tmp_path / "runs"
    capfd.readouterr()
    t0 = time.monotonic()
    rc = _main([*BAD[case][0], "--storage", str(storage)])
    elapsed = time.monotonic() - t0
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc not in (0, None), err
    assert len(lines) == 1, err
    assert "error" in lines[0] and BAD[case][1] in lines[0], lines[0]
    assert not storage.exists(), f"{case} left {sorted(storage.rglob('*'))}"
    assert elapsed < 10, f"{case} took {elapsed:.1f} s to fail"


@pytest.mark.parametrize("case", ["forget size", "unwritable storage"])
def test_input_the_data_or_disk_refuses_fails_before_ray_starts(case, tmp_path, capfd):
    """Sizes are checked against the dataset and the storage path for writing before Ray or any folder."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    storage = (blocker / "runs") if case == "unwritable storage" else (tmp_path / "runs")
    args = ["scrub", "--forget-size", "100000"] if case == "forget size" else ["scrub"]
    capfd.readouterr()
    rc = _main([*args, "--storage", str(storage), "--no-dashboard"])
    out = capfd.readouterr()
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error:"), out.err
    assert ("100000" in lines[0]) if case == "forget size" else ("a-file" in lines[0]), lines[0]
    assert "Ray" not in out.out and not storage.exists()


@pytest.mark.parametrize("case", CLI_CASES)
def test_bad_command_line_prints_one_line(cli_failures, case):
    proc, storage = cli_failures[case]
    baseline, _ = cli_failures["help"]
    assert proc.returncode == 2, describe(proc)
    lines = stderr_lines(proc)
    assert len(lines) == 1 and BAD[case][1] in lines[0], describe(proc)
    assert not storage.exists()
    # Started side by side with `--help`: failing may cost at most 10 s on top of the interpreter start-up.
    assert proc.wall < baseline.wall + 10, (proc.wall, baseline.wall)


# --- 8. --help ----------------------------------------------------------------------------------------------------
def test_help_documents_every_option(cli_failures):
    from tuner.search import build_parser

    proc, _ = cli_failures["help"]
    assert proc.returncode == 0, describe(proc)
    text = proc.stdout
    parser = build_parser()
    for action in parser._actions:
        assert action.help and action.help != argparse.SUPPRESS and action.help.strip(), action.dest
        for opt in action.option_strings:
            assert opt in text, f"{opt} missing from --help"
        if not action.option_strings:  # the positional algorithm: its choices are listed
            assert all(c in text for c in action.choices)
    assert "extra configs to evaluate first" in " ".join(text.split())
