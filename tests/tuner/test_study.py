"""`python -m tuner.study --preset smoke` and `python -m tuner.report`, end to end on digits (real Ray tasks).

The study is slow (about a minute of CPU): its tests run with the searches (`-m slow`); the bad-input tests are quick.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import matplotlib.image as mpimg
import pytest
from scipy import stats

from .conftest import cli_env

FIGURES = ("tow", "tow_mia", "test_acc", "retain_acc", "forget_acc")
PNG_SHAPE = (504, 768)  # 6.4 × 4.2 inches at 120 dpi (tuner/figures.py)


def module(name: str, *args: str, cwd, timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", name, *args], cwd=cwd, env=cli_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smoke(search_root, shared_store, in_process):
    import ray

    from tuner.study import main

    args = ("--preset", "smoke", "--storage", str(search_root / "studies"), "--store", str(shared_store),
            "--name", "smoke")
    first = module("tuner.study", *args, cwd=search_root)
    again = in_process(main, *args)  # resumable: nothing is left to run, so it needs no process of its own
    again.ray_started = ray.is_initialized()
    if again.ray_started:  # never leave a Ray behind in the test process
        ray.shutdown()
    return first, again, search_root / "studies" / "smoke"


@pytest.mark.slow
def test_smoke_study_writes_every_figure_and_the_summary(smoke):
    first, _, exp = smoke
    assert first.returncode == 0, first.stderr[-3000:]
    for key in FIGURES:
        img = mpimg.imread(exp / "figures" / f"digits-resnet18-{key}.png")
        assert img.shape[:2] == PNG_SHAPE, (key, img.shape)
        assert img[..., :3].std() > 0.05, f"{key}: the figure is blank"
    report = (exp / "report.md").read_text()
    for key in FIGURES:
        assert f"figures/digits-resnet18-{key}.png" in report


@pytest.mark.slow
def test_one_shot_and_sequential_rows_are_both_present(smoke):
    _, _, exp = smoke
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


@pytest.mark.slow
def test_intervals_come_from_the_seeds_actually_run(smoke):
    _, _, exp = smoke
    files = (exp / "runs").glob("digits-resnet18-neggrad_plus-confidence-sequential-seed*.json")
    runs = [json.loads(p.read_text()) for p in files]
    assert sorted(r["seed"] for r in runs) == [0, 1]
    vals = [r["record"]["tow"] for r in runs]
    mean = sum(vals) / 2
    half = stats.t.ppf(0.975, df=1) * stats.tstd(vals) / 2 ** 0.5
    row = next(ln for ln in (exp / "report.md").read_text().splitlines()
               if ln.startswith("| neggrad_plus (confidence) | sequential |"))
    assert f"{mean:.4f} [{mean - half:.4f}, {mean + half:.4f}]" in row, row


@pytest.mark.slow
def test_a_second_run_resumes_with_nothing_left(smoke):
    first, again, _ = smoke
    assert again.returncode == 0, again.stderr[-2000:]
    assert "6 cells, 6 already done" in again.stdout
    # with nothing left it only rewrites the report: no Ray is started
    assert "Started a local Ray instance" in first.stderr and not again.ray_started, again.stderr[-2000:]


@pytest.mark.parametrize("case", ["missing folder", "not an experiment"])
def test_report_refuses_what_is_not_an_experiment(tmp_path, case, in_process):
    from tuner.report import main

    target = tmp_path / "nope" if case == "missing folder" else tmp_path
    res = in_process(main, str(target))
    rc, err = res.returncode, res.stderr
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err


@pytest.mark.parametrize("args, needle", [
    (["--methods", "nope"], "nope"),
    (["--configs", "CONFIGS"], "frobnicate"),
    (["--proxies", "loss"], "loss"),
    (["--requests", "0"], "--requests must be >= 1, got 0"),  # an explicit zero is refused, never the preset's
    (["--seeds", "-1"], "--seeds must be model seeds >= 0"),
    (["--name", "../x"], "--name must be one folder name"),
])
def test_study_refuses_unknown_methods_and_configs_in_one_line(tmp_path, args, needle, in_process):
    (tmp_path / "c.json").write_text(json.dumps([{"algorithm": "frobnicate", "dataset": "digits", "arch": "resnet18",
                                                  "params": {}}]))
    from tuner.study import main

    args = [str(tmp_path / "c.json") if a == "CONFIGS" else a for a in args]
    res = in_process(main, "--preset", "smoke", "--storage", str(tmp_path / "s"), *args)
    rc, err = res.returncode, res.stderr
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "s").exists()
