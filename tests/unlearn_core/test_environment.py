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


def _fresh(code: str) -> list[str]:
    """stdout words of `code` run in a fresh interpreter without OMP_NUM_THREADS."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**env, "PYTHONPATH": str(ROOT)})
    return out.stdout.split()


def test_use_cpus_sets_the_share_in_a_fresh_process():
    code = ("import os, torch; from unlearn_core.environment import use_cpus; "
            "print(use_cpus(1.5), torch.get_num_threads(), use_cpus(None) == len(os.sched_getaffinity(0)))")
    assert _fresh(code) == ["1", "1", "True"]


def test_a_run_alone_honours_omp_num_threads_and_the_affinity_mask():
    """A user who set OMP_NUM_THREADS (a shared node, a job scheduler) keeps it; else the CPUs the process may
    run on (here pinned to one with sched_setaffinity, as `taskset -c 0` would), not every core."""
    code = ("import os; from unlearn_core.environment import use_cpus\n"
            "for v in ('1', '3', 'garbage'):\n"
            "    os.environ['OMP_NUM_THREADS'] = v; print(use_cpus(None))\n"
            "del os.environ['OMP_NUM_THREADS']; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
            "print(use_cpus(None))")
    assert _fresh(code) == ["1", "3", str(len(os.sched_getaffinity(0))), "1"]
