"""The process's environment: versions and device recorded with every result, and torch's thread count.

`use_cpus` is the one place that sets torch's threads: every process the project starts (the CLI, a trial, a
prepare task, a final run, a study cell) calls it with its CPU share. torch's default (one thread per core in
every process) oversubscribes a shared node: two threads per process on a busy 2-core machine measured up to
~40× slower than one.
"""
from __future__ import annotations

import os
import platform

import numpy as np
import torch


def environment() -> dict:
    """Versions and device, recorded with every result."""
    import sklearn

    dev = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
           else f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)")
    return {"torch": str(torch.__version__), "numpy": np.__version__, "sklearn": sklearn.__version__,
            "python": platform.python_version(), "device": dev}


def machine_cpus() -> int:
    """The CPUs a process that has the machine to itself may use: `OMP_NUM_THREADS` when the user set it (torch
    honours it too), else the process's affinity mask (`taskset`, a container's cpuset), else every core."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity masks on macOS / Windows
        return os.cpu_count() or 1


def use_cpus(cpus: float | None) -> int:
    """Set torch's intra-op threads to this process's CPU share (at least 1); returns the count set.

    `None` means "the whole machine is mine" (the CLI run alone): `machine_cpus()`.
    """
    n = machine_cpus() if cpus is None else max(1, int(cpus))
    torch.set_num_threads(n)
    return n
