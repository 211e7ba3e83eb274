"""How the benchmarks time things and say where a figure came from (airbench's discipline).

CUDA events around the timed work only and `synchronize` before reading them; warm-up is the caller's, left
out of the window; every figure is mean ± std over n repeats (`summary`). `provenance` is the block every
result carries: date, device, versions, the exact command, the git commit and a hash of the benchmark code.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from unlearn_core.jsonable import jsonable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GIB = 2 ** 30


class Timer:
    """Seconds of the work inside the block: CUDA events + synchronize on a GPU, perf_counter on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.seconds = float("nan")

    def __enter__(self) -> "Timer":
        if self.cuda:
            torch.cuda.synchronize()  # earlier queued work must not land inside the window
            self._start, self._end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self._end.record()
            torch.cuda.synchronize()
            self.seconds = self._start.elapsed_time(self._end) / 1000.0
        else:
            self.seconds = time.perf_counter() - self._t0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def summary(values) -> dict:
    """mean ± std (ddof 1; 0 for one value) over n repeats, with the raw values."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size),
            "values": [float(x) for x in v]}


def mean_of(d) -> Optional[float]:
    """The mean of a `summary`, or None (missing section, failed measurement)."""
    return d.get("mean") if isinstance(d, dict) else None


def log(msg: str) -> None:
    print(msg, flush=True)


def gpu_name_no_context() -> Optional[str]:
    """The GPU's name from nvidia-smi: no CUDA context in this process before the MPS section."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    with contextlib.suppress(Exception):
        r = subprocess.run([exe, "--query-gpu=name,driver_version,compute_mode", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip().splitlines()[0]
    return None


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def git_commit() -> Optional[str]:
    with contextlib.suppress(Exception):
        r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return r.stdout.strip() + ("+dirty" if dirty else "") if r.returncode == 0 else None
    return None


def code_sha256() -> str:
    """Short sha256 of the benchmark code (every benchmarks/*.py, by name): which code made the figures."""
    h = hashlib.sha256()
    for p in sorted(HERE.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def provenance(device: torch.device, mode: str, source: str, hyp: dict) -> dict:
    """Date, device, versions, the command line and the settings: printed in the header and kept in the JSON."""
    import sklearn
    import torchvision

    cpus = cpu_count()
    if device.type == "cuda":
        dev = gpu_name_no_context() or f"cuda:{device.index or 0}"
    else:
        dev = f"cpu ({platform.processor() or platform.machine()}, {cpus} cores)"
    return {
        "device": dev, "device_type": device.type, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda, "numpy": np.__version__, "sklearn": sklearn.__version__,
        "python": platform.python_version(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv, "command": shlex.join(["python", *sys.argv]), "mode": mode, "data": source,
        "cpus": cpus, "torch_threads": torch.get_num_threads(), "git_commit": git_commit(),
        "script_sha256": code_sha256(), "hyp": jsonable(hyp),
    }


def device_name_after_context(prov: dict, device: torch.device) -> None:
    """Once this process may hold a CUDA context: torch's name for the GPU (and the device, if nvidia-smi was
    not there)."""
    if device.type == "cuda":
        prov["device_torch"] = torch.cuda.get_device_name(device)
        if prov["device"].startswith("cuda:"):
            prov["device"] = prov["device_torch"]
