"""`python -m tuner.study` and `python -m tuner.report`: what they refuse, in one line, before anything is written.

The smoke study itself runs end to end (real Ray tasks, figures, report, resume) on the Ray Jobs test's cluster,
whose originals it shares: tests/tuner/test_ray_jobs.py.
"""
from __future__ import annotations

import json

import pytest


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
