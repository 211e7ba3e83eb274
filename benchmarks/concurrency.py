"""P1 with several trial processes on one GPU: plainly time-sliced, then under CUDA MPS.

Each process (`worker_main`, started as `pipeline.py --worker`) warms up, touches a ready file and waits for a
`go` file, so all start together; then it runs SCRUB ResNet-18 epochs and prints one JSON line. The aggregate
is all their images over the union of their timed windows, in wall-clock time (comparable across processes;
CUDA events are not). The MPS control daemon is private: its pipe and log folders live in a temporary folder,
and it is told to quit afterwards whatever happened.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unlearn_core.environment import use_cpus
from unlearn_core.training import pick_device

from benchmarks.study_cost import images_per_epoch
from benchmarks.throughput import CONC_JOB
from benchmarks.timing import GIB, HERE, ROOT, log, summary, sync
from benchmarks.workload import HYP, new_model, p1_sets, unlearn_config, unlearner, warm_size

PIPELINE = HERE / "pipeline.py"


def worker_main(args) -> int:
    """One trial process: warm up, wait at the barrier, run `--worker-epochs` epochs, print one JSON line."""
    use_cpus(1)
    hyp = HYP["tiny" if args.tiny else "full"]
    device = pick_device(args.device)
    algorithm, arch = CONC_JOB
    bs, k = hyp["run"]["batch"], args.worker_epochs
    z = np.load(args.worker_pool)
    retain, forget = p1_sets(z["x"], z["y"], hyp, device)
    seed = args.seed + 1000 * (args.worker_id + 1)
    # Warm-up before the barrier on a subset with the same batch shapes: cuDNN autotuning and allocator growth
    # stay out of the timed window without a whole extra epoch per process.
    wr = retain.subset(np.arange(warm_size(len(retain), bs, 4)))
    wf = forget.subset(np.arange(warm_size(len(forget), bs, 2)))
    unlearner(algorithm, new_model(arch, hyp, device, seed), wf, wr, unlearn_config(algorithm, 1, bs),
              seed=seed).next_epoch()
    unl = unlearner(algorithm, new_model(arch, hyp, device, seed), forget, retain, unlearn_config(algorithm, k, bs),
                    seed=seed)
    sync(device)
    barrier = Path(args.worker_barrier)
    (barrier / f"ready.{args.worker_id}").touch()
    deadline = time.time() + hyp["run"]["worker_timeout_s"]
    while not (barrier / "go").exists():
        if time.time() > deadline:
            print(json.dumps({"id": args.worker_id, "error": "no go signal"}), flush=True)
            return 2
        time.sleep(0.002)
    sync(device)
    t0 = time.time()  # wall clock: comparable across processes (CUDA events are not)
    for _ in range(k):
        unl.next_epoch()
    sync(device)
    t1 = time.time()
    imgs = k * images_per_epoch(algorithm, len(retain), len(forget), bs)
    rec = {"id": args.worker_id, "pid": os.getpid(), "images": imgs, "t0": t0, "t1": t1, "img_s": imgs / (t1 - t0)}
    if device.type == "cuda":
        rec["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / GIB
        rec["max_memory_reserved_gib"] = torch.cuda.max_memory_reserved() / GIB
    print(json.dumps(rec), flush=True)
    return 0


def tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text()[-chars:]
    except OSError:
        return ""


def run_workers(n: int, pool_file: str, tmp: Path, hyp: dict, args, extra_env: dict) -> dict:
    """Start n worker processes, release them together once all are warm, aggregate their img/s."""
    barrier = Path(tempfile.mkdtemp(prefix=f"barrier{n}-", dir=tmp))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra_env}
    base = [sys.executable, str(PIPELINE), "--worker", "--worker-pool", pool_file, "--worker-barrier", str(barrier),
            "--worker-epochs", str(hyp["run"]["worker_epochs"]), "--seed", str(args.seed)]
    base += ["--tiny"] if args.tiny else []
    base += ["--device", args.device] if args.device else []
    procs, files = [], []
    try:
        for i in range(n):
            so, se = open(barrier / f"out.{i}", "w"), open(barrier / f"err.{i}", "w")
            files += [so, se]
            procs.append(subprocess.Popen(base + ["--worker-id", str(i)], stdout=so, stderr=se, env=env, cwd=ROOT))
        deadline = time.time() + hyp["run"]["ready_timeout_s"]
        while sum((barrier / f"ready.{i}").exists() for i in range(n)) < n:
            dead = [i for i, p in enumerate(procs) if p.poll() is not None]
            if dead or time.time() > deadline:
                why = f"worker {dead[0]} exited (rc {procs[dead[0]].returncode})" if dead else \
                    f"not all {n} workers warm after {hyp['run']['ready_timeout_s']} s"
                return {"error": why, "stderr_tail": tail(barrier / f"err.{dead[0] if dead else 0}")}
            time.sleep(0.05)
        (barrier / "go").touch()
        recs = []
        for i, p in enumerate(procs):
            rc = p.wait(timeout=hyp["run"]["worker_timeout_s"])
            lines = [ln for ln in (barrier / f"out.{i}").read_text().splitlines() if ln.startswith("{")]
            if rc != 0 or not lines:
                return {"error": f"worker {i} failed (rc {rc})", "stderr_tail": tail(barrier / f"err.{i}")}
            recs.append(json.loads(lines[-1]))
    except subprocess.TimeoutExpired:
        return {"error": f"workers still running after {hyp['run']['worker_timeout_s']} s"}
    finally:
        for p in procs:  # only the processes started here, by handle
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in files:
            f.close()
    window = max(r["t1"] for r in recs) - min(r["t0"] for r in recs)
    out = {"processes": n, "aggregate_img_s": sum(r["images"] for r in recs) / window, "window_s": window,
           "per_process_img_s": summary(r["img_s"] for r in recs),
           "start_skew_s": max(r["t0"] for r in recs) - min(r["t0"] for r in recs)}
    if "max_memory_allocated_gib" in recs[0]:
        out["max_memory_allocated_gib_per_process"] = max(r["max_memory_allocated_gib"] for r in recs)
    return out


def measure_concurrency(levels, pool_file: str, tmp: Path, hyp: dict, args, extra_env=None) -> dict:
    """Each process count in `levels` in turn: their aggregate, or the error that stopped them."""
    out = {}
    for n in levels:
        log(f"  {n} processes ...")
        out[str(n)] = run_workers(n, pool_file, tmp, hyp, args, extra_env or {})
        if "error" in out[str(n)]:
            log(f"    failed: {out[str(n)]['error']}")
        else:
            log(f"    aggregate {out[str(n)]['aggregate_img_s']:,.0f} img/s")
    return out


@contextlib.contextmanager
def mps_daemon(tmp: Path):
    """Start a private CUDA MPS control daemon; yields (env for its clients, note). Always stopped after."""
    exe = shutil.which("nvidia-cuda-mps-control")
    if exe is None:
        yield None, "nvidia-cuda-mps-control not found: MPS skipped"
        return
    pipe, logs = tmp / "mps-pipe", tmp / "mps-log"
    pipe.mkdir(), logs.mkdir()
    extra = {"CUDA_MPS_PIPE_DIRECTORY": str(pipe), "CUDA_MPS_LOG_DIRECTORY": str(logs)}
    env = {**os.environ, **extra}
    try:
        r = subprocess.run([exe, "-d"], env=env, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        yield None, f"nvidia-cuda-mps-control -d failed: {e}"
        return
    if r.returncode != 0:
        yield None, f"nvidia-cuda-mps-control -d failed (rc {r.returncode}): {(r.stderr or r.stdout).strip()[-300:]}"
        return
    try:
        yield extra, "MPS control daemon started (private pipe/log directories)"
    finally:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run([exe], input="quit\n", env=env, capture_output=True, text=True, timeout=60)


def run_concurrency(x: np.ndarray, y: np.ndarray, tmp: Path, hyp: dict, args, *, cuda: bool, plain: bool,
                    mps: bool, res: dict, section) -> dict:
    """P1's concurrency block {"plain": ..., "mps": ...}. Call it before this process touches CUDA: it must
    hold no context while the MPS daemon runs, and none of its memory while the processes share the GPU.
    `section(res, name, fn)` runs one part and records its error in `res`."""
    out: dict = {}
    n_pool = hyp["data"]["retain"] + hyp["data"]["forget"]
    pool_file = str(tmp / "pool.npz")
    np.savez(pool_file, x=x[:n_pool], y=y[:n_pool])
    levels = hyp["run"]["concurrency"]
    if plain:
        log(f"[P1] concurrency, plain time-slicing: {'/'.join(CONC_JOB)} trial processes")
        lv = section(res, "concurrency", lambda: measure_concurrency(levels, pool_file, tmp, hyp, args))
        out["plain"] = {"levels": lv or {}}
        for n, v in (lv or {}).items():  # a failed plain level is a bug here; under MPS, a note
            if "error" in v:
                res.setdefault("errors", {})[f"concurrency {n}"] = f"{v['error']}\n{v.get('stderr_tail', '')}"
    if mps:
        if not cuda:
            out["mps"] = {"note": "no CUDA device: MPS skipped"}
        else:
            log("[P1] concurrency under CUDA MPS")
            with mps_daemon(tmp) as (extra, note):
                out["mps"] = {"note": note}
                if extra is not None:
                    lv = section(res, "mps", lambda: measure_concurrency(levels, pool_file, tmp, hyp, args, extra))
                    out["mps"]["levels"] = lv or {}
                    out["mps"]["control_log_tail"] = tail(tmp / "mps-log" / "control.log", 600)
    return out
