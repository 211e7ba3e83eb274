"""Threads are set in one place (`environment.use_cpus`), by every process the project starts."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINTS = {  # every function that starts work in a process of its own, and must set its CPU share
    "unlearn_core/__main__.py": "cmd_run", "tuner/trainable.py": "run_trial", "tuner/prepare.py": "_prepare_one",
    "tuner/final_runs.py": "_run_one", "tuner/study.py": "_run_cell",
}


def test_torch_threads_are_set_only_by_use_cpus():
    offenders = []
    for pkg in ("unlearn_core", "tuner", "benchmarks"):
        for f in (ROOT / pkg).rglob("*.py"):
            if f.name != "environment.py" and "set_num_threads" in f.read_text():
                offenders.append(str(f.relative_to(ROOT)))
    assert offenders == []


def test_every_process_entry_point_sets_its_cpu_share():
    for path, func in ENTRY_POINTS.items():
        src = (ROOT / path).read_text()
        body = re.search(rf"def {func}\(.*?(?=\ndef |\Z)", src, re.S)
        assert body and "use_cpus(" in body.group(0), f"{path}:{func} does not call use_cpus"


def test_use_cpus_sets_the_share_in_a_fresh_process():
    code = ("import torch; from unlearn_core.environment import use_cpus; "
            "print(use_cpus(1.5), torch.get_num_threads(), use_cpus(None) == (__import__('os').cpu_count() or 1))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.split() == ["1", "1", "True"]
