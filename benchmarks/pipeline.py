#!/usr/bin/env python3
"""What one GPU buys with this project's unlearning pipeline: throughput, trial cost, memory, study cost.

    python benchmarks/pipeline.py --out bench.json                       # one GPU, synthetic CIFAR-shaped data, ≤ 8 min
    python benchmarks/pipeline.py --data .data/cifar10-jpeg.npz --with-training --out bench.json
    python benchmarks/pipeline.py --tiny --out /tmp/bench.json           # CPU smoke run (CI), seconds

Sections (the targets are H100 targets; see benchmarks/README.md):
  P1   images/s of the project's trial pipeline — `create_unlearner` epochs of SCRUB and NegGrad+ on
       ResNet-18 and VGG-16-bn over `DeviceData` — against a classic baseline written here (torch DataLoader,
       PIL crop+flip on the CPU, fp32, plain training), measured in the same run; then 2 / 4 / 8 trial
       processes at once on the one GPU, plainly time-sliced and under CUDA MPS.   target ≥ 4.0× classic
  P2   wall-seconds of one full-fidelity trial (SCRUB, paper config, ResNet-18, final metrics with the SVC
       MIA): unlearning, evaluation and MIA (CPU) apart; trials per GPU-hour.      target ≥ 360 / H100-hour
  P5   peak GPU memory of that trial.                                              target ≤ 8 GiB
  art. seconds to train an original and a retrain (measured, or epoch time × epochs, marked "estimated"),
       and to save + load a ResNet-18 state through `ArtifactStore`.
  P3   GPU-hours of the paper's whole study from the unit costs above (formula printed and in the JSON).
                                                                                   target ≤ 4 H100-hours
Timing discipline (airbench): CUDA events around the timed work only, `synchronize` before reading, warm-up
excluded, every figure mean ± std over n repeats of this run. Compare figures only within one run: leases of
the same GPU model differ by up to ~25 % (reference/measured-anchors.md).

It measures what the project does — it adds no speed tricks of its own to unlearn_core. It imports only
unlearn_core, torch, torchvision, numpy and scikit-learn: the GPU machines have no Ray or Optuna.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import gc
import hashlib
import io
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout that is not pip-installed (the GPU machine)
    sys.path.insert(0, str(ROOT))

from unlearn_core import neggrad_plus, scrub  # noqa: E402,F401  (importing registers the algorithms)
from unlearn_core.batching import DeviceData  # noqa: E402
from unlearn_core.errors import LossDiverged  # noqa: E402
from unlearn_core.models import create_model  # noqa: E402
from unlearn_core.training import TrainConfig, pick_device, prepare_model, sgd, train  # noqa: E402
from unlearn_core.unlearning import create_unlearner, make_config  # noqa: E402

# unlearn_core.metrics (scipy, scikit-learn) and unlearn_core.artifacts (fsspec) are imported where they are
# used: the trial worker processes do not need them, and on a 2-core CI runner they cost seconds each.

# --------------------------------------------------------------------------------------------------
# Settings, grouped by role. Sizes are images; "full" is CIFAR-10 as the paper uses it.
# --------------------------------------------------------------------------------------------------

HYP: dict[str, dict[str, Any]] = {
    "full": dict(
        data=dict(image=32, classes=10, n_train=50_000, n_test=10_000,  # CIFAR-10's official split sizes
                  retain=45_000, forget=3_000,          # P1: 45k retain + 3k forget (the brief's CIFAR shape)
                  trial_retain=42_000),                 # P2: the paper's 45k train − 3k forget; val = 5k rest
        model=dict(width=1.0),
        run=dict(batch=256,                             # unlearning + training batch (Tables C.1–C.3, CIFAR-10)
                 batch_c100=128,                        # CIFAR-100's training batch (Table C.1)
                 warmup_epochs=1, repeats=3,            # P1 and the classic baseline: per (algorithm, arch)
                 worker_epochs=2, concurrency=(2, 4, 8),  # timed epochs per trial process; process counts
                 trial_repeats=2, trial_epochs=10, trial_max_steps=4,  # P2: SCRUB C10-R18 (Table C.2)
                 train_repeats=2,                       # timed one-epoch `train` calls per (arch, batch)
                 train_epochs=30,                       # --with-training: the CIFAR-10 recipe (Table C.1)
                 io_repeats=3,                          # ArtifactStore save + load
                 ready_timeout_s=300, worker_timeout_s=600),
    ),
    "tiny": dict(  # CI on a 2-core CPU: same code paths, a few hundred 16×16 images, width-0.125 models, 1 epoch
        data=dict(image=16, classes=10, n_train=256, n_test=64, retain=192, forget=32, trial_retain=176),
        model=dict(width=0.125),
        run=dict(batch=64, batch_c100=32, warmup_epochs=1, repeats=2, worker_epochs=1, concurrency=(2,),
                 trial_repeats=2, trial_epochs=1, trial_max_steps=1, train_repeats=2, train_epochs=1,
                 io_repeats=2, ready_timeout_s=150, worker_timeout_s=150),
    ),
}

ALGORITHMS = ("scrub", "neggrad_plus")
ARCHS = ("resnet18", "vgg16_bn")
CROP_PAD = 4            # CIFAR augmentation: 4-pixel padded random crop + horizontal flip
CONC_JOB = ("scrub", "resnet18")  # the job the concurrency sweep runs (the anchors' ResNet-18)
SECTIONS = ("concurrency", "mps", "p1", "baseline", "artifacts", "p2", "p3")

# The paper's study (Table D.1 and Tables C.1–C.4): what P3 prices with this run's unit costs.
STUDY = dict(
    seeds=5, steps=5, proxies=5, n_train=45_000, forget=3_000, unlearn_epochs=10, unlearn_batch=256,
    datasets={"cifar10": dict(train_epochs=30, train_batch="batch"),
              "cifar100": dict(train_epochs=100, train_batch="batch_c100")},
    scrub_max_steps={("resnet18", "cifar10"): 4, ("vgg16_bn", "cifar10"): 7,     # Table C.2
                     ("resnet18", "cifar100"): 5, ("vgg16_bn", "cifar100"): 7},
    rum_subset=1_000, rum_epochs={"scrub": (10, 10, 10), "neggrad_plus": (5, 5, 10)},  # Table C.4
    paper_a10_gpu_hours=501.6,  # Table D.1, NVIDIA A10, same study
)
TARGETS = dict(p1_ratio=4.0, p2_trials_per_hour=360.0, p3_gpu_hours=4.0, p5_gib=8.0)
GIB = 2 ** 30

# --------------------------------------------------------------------------------------------------
# Timing and statistics
# --------------------------------------------------------------------------------------------------


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


def _mean(d) -> Optional[float]:
    return d.get("mean") if isinstance(d, dict) else None


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------------
# Data: synthetic CIFAR-shaped uint8 (throughput does not depend on pixel values) or the real JPEG copy
# --------------------------------------------------------------------------------------------------


def load_pool(hyp: dict, data_path: Optional[str], seed: int):
    """(x_train, y_train, x_test, y_test, source): uint8 N×3×S×S and int64 labels, as numpy.

    Synthetic images are hyp's size (16 in --tiny); real ones keep theirs (CIFAR: 32), in every mode."""
    d = hyp["data"]
    n_train, n_test, s = d["n_train"], d["n_test"], d["image"]
    if data_path is None:
        rng = np.random.default_rng(seed)
        return (rng.integers(0, 256, (n_train, 3, s, s), dtype=np.uint8),
                rng.integers(0, d["classes"], n_train).astype(np.int64),
                rng.integers(0, 256, (n_test, 3, s, s), dtype=np.uint8),
                rng.integers(0, d["classes"], n_test).astype(np.int64), "synthetic uint8 (CIFAR-shaped)")
    from PIL import Image

    z = np.load(data_path)
    rng = np.random.default_rng(seed)
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        blob, off, y = z[f"{split}_jpeg"], z[f"{split}_offsets"], z[f"{split}_labels"].astype(np.int64)
        if n > len(y):
            raise SystemExit(f"--data {data_path}: {split} has {len(y)} images, this mode needs {n}")
        idx = rng.permutation(len(y))[:n]  # the file is ordered by class: a seeded shuffle makes the sets random
        x = np.stack([np.asarray(Image.open(io.BytesIO(blob[off[i]:off[i + 1]].tobytes())).convert("RGB"))
                      for i in idx])
        if x.shape[3] != 3 or x.shape[1] != x.shape[2]:
            raise SystemExit(f"--data {data_path}: images are {x.shape[1:]}, expected square RGB (H×W×3)")
        out += [np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y[idx]]
    return (*out, f"{data_path} (CIFAR-10 JPEG copy, seeded subset)")


def layout(hyp: dict) -> dict:
    """Positions in the training pool: P1 retain/forget, and P2's paper-shaped retain/forget/val."""
    d = hyp["data"]
    r, f, tr, n = d["retain"], d["forget"], d["trial_retain"], d["n_train"]
    return {"retain": np.arange(r), "forget": np.arange(r, r + f), "trial_retain": np.arange(tr),
            "val": np.concatenate([np.arange(tr, r), np.arange(r + f, n)])}


def batch_sizes(n: int, bs: int) -> list[int]:
    """Sizes of the batches `DeviceData.batches(bs)` yields for n examples (a lone last example joins its
    predecessor)."""
    if n <= 0:
        return []
    sizes = [bs] * (n // bs) + ([n % bs] if n % bs else [])
    if bs > 1 and len(sizes) > 1 and sizes[-1] == 1:
        sizes.pop()
        sizes[-1] += 1
    return sizes


def images_per_epoch(algorithm: str, n_retain: int, n_forget: int, bs: int, *, max_pass: bool = True) -> int:
    """Images the student processes in one epoch: SCRUB forget pass (in max-step epochs) + retain pass;
    NegGrad+ every retain batch plus the forget batch it is paired with (forget batches cycle)."""
    if algorithm == "scrub":
        return (n_forget if max_pass else 0) + n_retain
    fs = batch_sizes(n_forget, bs)
    nb = len(batch_sizes(n_retain, bs))
    return n_retain + (sum(fs[i % len(fs)] for i in range(nb)) if fs else 0)


def warm_size(n: int, bs: int, full_batches: int) -> int:
    """A subset size with the same trailing-batch shape as n: warms cuDNN's autotuner for every shape."""
    return min(n, full_batches * bs + n % bs)


def new_model(arch: str, hyp: dict, device: torch.device, seed: int) -> torch.nn.Module:
    """The project's model as a trial builds it (prepare_model: channels_last + cudnn.benchmark on CUDA)."""
    torch.manual_seed(seed)
    m = create_model(arch, hyp["data"]["classes"], width=hyp["model"]["width"])
    return prepare_model(m, device)


def unlearn_config(algorithm: str, epochs: int, bs: int, *, max_steps: Optional[int] = None, augment=False):
    params = dict(epochs=epochs, forget_batch_size=bs, retain_batch_size=bs, augment=augment)
    if algorithm == "scrub":
        params["max_steps"] = epochs if max_steps is None else max_steps
    return make_config(algorithm, params)


# --------------------------------------------------------------------------------------------------
# P1: the project's pipeline, one process
# --------------------------------------------------------------------------------------------------


def measure_project(algorithm: str, arch: str, retain: DeviceData, forget: DeviceData, hyp: dict,
                    device: torch.device, *, augment: bool = False, seed: int = 0) -> dict:
    """img/s of `create_unlearner(...)` epochs; every epoch is a max-step epoch for SCRUB (forget + retain)."""
    run = hyp["run"]
    bs, warm, n = run["batch"], run["warmup_epochs"], run["repeats"]
    cfg = unlearn_config(algorithm, warm + n, bs, augment=augment)
    unl = create_unlearner(algorithm, new_model(arch, hyp, device, seed), forget, retain, cfg, seed=seed,
                           pad=CROP_PAD, flip=True)
    imgs = images_per_epoch(algorithm, len(retain), len(forget), bs)
    secs, diverged = [], None
    try:
        for e in range(warm + n):
            with Timer(device) as t:
                unl.step()
            if e >= warm:
                secs.append(t.seconds)
    except LossDiverged as err:  # a throughput run must not hide it: report it, keep what was measured
        diverged = str(err)
    out = {"images_per_epoch": imgs, "epoch_s": summary(secs), "img_s": summary(imgs / s for s in secs),
           "warmup_epochs": warm, "augment": augment, "config": dataclasses.asdict(cfg)}
    if diverged:
        out["diverged"] = diverged
    return out


def profile_epoch(retain: DeviceData, forget: DeviceData, hyp: dict, device: torch.device) -> dict:
    """torch.profiler top-15 kernels (self device time) of one SCRUB ResNet-18 epoch after a warm-up epoch."""
    from torch.profiler import ProfilerActivity, profile

    cfg = unlearn_config("scrub", 2, hyp["run"]["batch"])
    unl = create_unlearner("scrub", new_model("resnet18", hyp, device, 0), forget, retain, cfg, seed=0,
                           pad=CROP_PAD, flip=True)
    unl.step()
    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        unl.step()
        sync(device)
    events = list(prof.key_averages())
    if cuda:
        kernels = [e for e in events if str(getattr(e, "device_type", "")).endswith("CUDA")]
        events = kernels or events

        def val(e):
            return float(getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0) or 0)
    else:
        def val(e):
            return float(e.self_cpu_time_total)
    total = sum(val(e) for e in events) or 1.0
    top = sorted((e for e in events if val(e) > 0), key=val, reverse=True)[:15]
    return {"what": "one SCRUB ResNet-18 max-step epoch", "time": "self device time" if cuda else "self CPU time",
            "total_ms": total / 1000.0,
            "top": [{"name": e.key[:120], "calls": int(e.count), "ms": val(e) / 1000.0,
                     "pct": 100.0 * val(e) / total} for e in top]}


# --------------------------------------------------------------------------------------------------
# P1: the classic baseline (what a paper codebase does), one process
# --------------------------------------------------------------------------------------------------


class PilImages(torch.utils.data.Dataset):
    """uint8 H×W×C images → PIL → transform, per example, in DataLoader worker processes."""

    def __init__(self, x_hwc: np.ndarray, y: np.ndarray, transform):
        self.x, self.y, self.transform = x_hwc, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def measure_classic(arch: str, x_chw: np.ndarray, y: np.ndarray, hyp: dict, device: torch.device,
                    num_workers: int, seed: int = 0) -> dict:
    """Plain fp32 training steps fed by a DataLoader with CPU-side PIL RandomCrop(32, 4) + flip.

    Deliberately generous to the baseline: persistent workers (no per-epoch worker start-up) and cuDNN
    autotuning, as the project's pipeline also gets — so the ratio isolates data path, precision and layout.
    """
    import torchvision.transforms as T

    run = hyp["run"]
    bs, warm, n = run["batch"], run["warmup_epochs"], run["repeats"]
    tf = T.Compose([T.RandomCrop(x_chw.shape[-1], padding=CROP_PAD), T.RandomHorizontalFlip(), T.ToTensor()])
    ds = PilImages(np.ascontiguousarray(x_chw.transpose(0, 2, 3, 1)), y, tf)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=bs, shuffle=True, num_workers=num_workers, pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    model = create_model(arch, hyp["data"]["classes"], width=hyp["model"]["width"]).to(device)  # fp32, NCHW
    opt = sgd(model, 0.1, 0.9, 5e-4)
    model.train()
    secs = []
    for e in range(warm + n):
        with Timer(device) as t:
            for xb, yb in loader:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        if e >= warm:
            secs.append(t.seconds)
    del loader  # ends the persistent workers
    gc.collect()
    return {"images_per_epoch": len(ds), "epoch_s": summary(secs), "img_s": summary(len(ds) / s for s in secs),
            "num_workers": num_workers, "pin_memory": device.type == "cuda", "precision": "fp32",
            # PyTorch's default lets cuDNN run fp32 convolutions in TF32: recorded, not changed.
            "tf32_convolutions": bool(torch.backends.cudnn.allow_tf32) if device.type == "cuda" else None,
            "augmentation": f"PIL RandomCrop({x_chw.shape[-1]}, padding={CROP_PAD}) + RandomHorizontalFlip, CPU",
            "warmup_epochs": warm}


# --------------------------------------------------------------------------------------------------
# P1: several trial processes on one GPU (plain time-slicing, then CUDA MPS)
# --------------------------------------------------------------------------------------------------


def worker_main(args) -> int:
    """One trial process: warm up, wait at the barrier, run `--worker-epochs` epochs, print one JSON line."""
    torch.set_num_threads(1)
    hyp = HYP["tiny" if args.tiny else "full"]
    device = pick_device(args.device)
    algorithm, arch = CONC_JOB
    bs, k = hyp["run"]["batch"], args.worker_epochs
    z = np.load(args.worker_pool)
    data = DeviceData.from_arrays(z["x"], z["y"], device)
    lay = layout(hyp)
    retain, forget = data.subset(lay["retain"]), data.subset(lay["forget"])
    seed = args.seed + 1000 * (args.worker_id + 1)
    # Warm-up before the barrier on a subset with the same batch shapes: cuDNN autotuning and allocator growth
    # stay out of the timed window without a whole extra epoch per process.
    wr, wf = retain.subset(np.arange(warm_size(len(retain), bs, 4))), forget.subset(np.arange(warm_size(len(forget), bs, 2)))
    create_unlearner(algorithm, new_model(arch, hyp, device, seed), wf, wr, unlearn_config(algorithm, 1, bs),
                     seed=seed, pad=CROP_PAD, flip=True).step()
    unl = create_unlearner(algorithm, new_model(arch, hyp, device, seed), forget, retain,
                           unlearn_config(algorithm, k, bs), seed=seed, pad=CROP_PAD, flip=True)
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
        unl.step()
    sync(device)
    t1 = time.time()
    imgs = k * images_per_epoch(algorithm, len(retain), len(forget), bs)
    rec = {"id": args.worker_id, "pid": os.getpid(), "images": imgs, "t0": t0, "t1": t1, "img_s": imgs / (t1 - t0)}
    if device.type == "cuda":
        rec["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / GIB
        rec["max_memory_reserved_gib"] = torch.cuda.max_memory_reserved() / GIB
    print(json.dumps(rec), flush=True)
    return 0


def run_workers(n: int, pool_file: str, tmp: Path, hyp: dict, args, extra_env: dict) -> dict:
    """Start n worker processes, release them together once all are warm, aggregate their img/s."""
    barrier = Path(tempfile.mkdtemp(prefix=f"barrier{n}-", dir=tmp))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra_env}
    base = [sys.executable, str(SCRIPT), "--worker", "--worker-pool", pool_file, "--worker-barrier", str(barrier),
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
                return {"error": why, "stderr_tail": _tail(barrier / f"err.{dead[0] if dead else 0}")}
            time.sleep(0.05)
        (barrier / "go").touch()
        recs = []
        for i, p in enumerate(procs):
            rc = p.wait(timeout=hyp["run"]["worker_timeout_s"])
            lines = [ln for ln in (barrier / f"out.{i}").read_text().splitlines() if ln.startswith("{")]
            if rc != 0 or not lines:
                return {"error": f"worker {i} failed (rc {rc})", "stderr_tail": _tail(barrier / f"err.{i}")}
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


def _tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text()[-chars:]
    except OSError:
        return ""


def measure_concurrency(levels, pool_file: str, tmp: Path, hyp: dict, args, extra_env=None) -> dict:
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


# --------------------------------------------------------------------------------------------------
# P2 + P5: one full-fidelity trial
# --------------------------------------------------------------------------------------------------


def measure_trial(train_pool: DeviceData, test: DeviceData, hyp: dict, device: torch.device, *,
                  state: Optional[dict] = None, seed: int = 0) -> tuple[dict, Optional[dict]]:
    """SCRUB (paper C10-R18 config) on ResNet-18 as `run_experiment` runs it after its cached original and
    retrain: unlearn every epoch, then the final evaluation — accuracies on forget/retain/val/test and the SVC
    MIA. Evaluation (GPU) and the MIA's SVC (CPU) are timed apart."""
    from unlearn_core.metrics import accuracy, predict_probs, svc_mia

    run, lay = hyp["run"], layout(hyp)
    retain, forget = train_pool.subset(lay["trial_retain"]), train_pool.subset(lay["forget"])
    val = train_pool.subset(lay["val"])
    cfg = make_config("scrub", dict(lr=0.01, epochs=run["trial_epochs"], max_steps=run["trial_max_steps"],
                                    alpha=0.9, gamma=0.9, temperature=4.0, forget_batch_size=run["batch"],
                                    retain_batch_size=run["batch"]))
    cuda = device.type == "cuda"
    reps, peak = [], None
    for r in range(run["trial_repeats"]):
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            if r == 0:
                torch.cuda.reset_peak_memory_stats()  # P5: from here on; the trial's data is already resident
        with Timer(device) as t_setup:
            model = new_model("resnet18", hyp, device, seed)
            if state is not None:
                model.load_state_dict(state)
            unl = create_unlearner("scrub", model, forget, retain, cfg, seed=seed, pad=CROP_PAD, flip=True)
        diverged = None
        with Timer(device) as t_unl:
            try:
                for _ in range(cfg.epochs):
                    unl.step()
            except LossDiverged as err:
                diverged = str(err)
        with Timer(device) as t_eval:
            acc = {f"{k}_acc": accuracy(predict_probs(unl.model, d.x), d.y)
                   for k, d in (("forget", forget), ("retain", retain), ("val", val), ("test", test))}
            # The MIA's GPU half, as metrics.mia_score does it: shadow members = a seeded sample of |test|
            # retain examples, non-members = test, target = forget.
            n_r, n_t = len(retain), len(test)
            pick = (np.sort(np.random.default_rng(seed).choice(n_r, size=n_t, replace=False)) if n_r > n_t
                    else np.arange(n_r))
            shadow = retain.subset(pick)
            p_in, p_out, p_f = (predict_probs(unl.model, d.x) for d in (shadow, test, forget))
        t0 = time.perf_counter()  # the MIA's CPU half: SVC fit + predict (scikit-learn)
        mia = svc_mia(p_in, shadow.y, p_out, test.y, p_f, forget.y, seed=seed)["confidence"]
        mia_s = time.perf_counter() - t0
        rec = {"setup_s": t_setup.seconds, "unlearn_s": t_unl.seconds, "eval_s": t_eval.seconds, "mia_s": mia_s,
               "metrics": {**acc, "mia": mia}}
        if diverged:
            rec["diverged"] = diverged
        reps.append(rec)
        if cuda and r == 0:
            peak = {"max_memory_allocated_gib": torch.cuda.max_memory_allocated() / GIB,
                    "max_memory_reserved_gib": torch.cuda.max_memory_reserved() / GIB}
        del unl, model
    keys = ("setup_s", "unlearn_s", "eval_s", "mia_s")
    out = {k: summary(r[k] for r in reps) for k in keys}
    eval_images = 2 * len(forget) + len(retain) + len(val) + 2 * len(test) + len(shadow)
    out.update(images=images_trial(len(retain), len(forget), cfg.epochs, cfg.max_steps), eval_images=eval_images,
               sizes={"retain": len(retain), "forget": len(forget), "val": len(val), "test": len(test)},
               config={f: getattr(cfg, f) for f in ("lr", "epochs", "max_steps", "alpha", "gamma", "temperature",
                                                    "retain_batch_size")},
               original="trained in this run" if state is not None else
               "random init (unlearning/eval seconds do not depend on it; the SVC's may)",
               metrics_last=reps[-1]["metrics"])
    if any("diverged" in r for r in reps):
        out["diverged"] = [r.get("diverged") for r in reps]
    return out, peak


def images_trial(n_retain: int, n_forget: int, epochs: int, max_steps: int) -> int:
    return max_steps * n_forget + epochs * n_retain


# --------------------------------------------------------------------------------------------------
# Artifacts: training an original / a retrain, and the store
# --------------------------------------------------------------------------------------------------


def measure_artifacts(train_pool: DeviceData, hyp: dict, device: torch.device, tmp: Path, *,
                      with_training: bool, seed: int = 0) -> tuple[dict, Optional[dict]]:
    """Training cost per epoch (both archs, CIFAR-10's and CIFAR-100's batch), an original + a retrain (trained
    with `with_training`, else estimated), and save + load of a ResNet-18 state through `ArtifactStore`.
    Returns (figures, the trained original's state or None)."""
    from unlearn_core.artifacts import ArtifactStore, artifact_key

    run, lay = hyp["run"], layout(hyp)
    n_orig = len(lay["trial_retain"]) + len(lay["forget"])  # the paper's train split: 45k (CIFAR)
    orig_set = train_pool.subset(np.arange(n_orig))
    retrain_set = train_pool.subset(lay["trial_retain"])
    epoch = {}
    for arch in ARCHS:
        for key in ("batch", "batch_c100"):
            bs = run[key]
            model = new_model(arch, hyp, device, seed)
            warm = orig_set.subset(np.arange(warm_size(n_orig, bs, 4)))
            train(model, warm, TrainConfig(epochs=1, batch_size=bs), seed=seed, pad=CROP_PAD, flip=True)
            secs = []
            for r in range(run["train_repeats"]):
                with Timer(device) as t:
                    train(model, orig_set, TrainConfig(epochs=1, batch_size=bs), seed=seed + r, pad=CROP_PAD, flip=True)
                secs.append(t.seconds)
            epoch[f"{arch}/bs{bs}"] = {"epoch_s": summary(secs), "img_s": summary(n_orig / s for s in secs),
                                       "images": n_orig, "batch": bs, "arch": arch, "role": key}
            del model
    e = run["train_epochs"]
    r18 = _mean(epoch[f"resnet18/bs{run['batch']}"]["epoch_s"])
    out: dict[str, Any] = {"train_epoch": epoch, "recipe_epochs": e}
    state = None
    if with_training:
        model = new_model("resnet18", hyp, device, seed)
        with Timer(device) as t:
            train(model, orig_set, TrainConfig(epochs=e, batch_size=run["batch"]), seed=seed, pad=CROP_PAD, flip=True)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        retrained = new_model("resnet18", hyp, device, seed)
        with Timer(device) as t2:
            train(retrained, retrain_set, TrainConfig(epochs=e, batch_size=run["batch"]), seed=seed, pad=CROP_PAD,
                  flip=True)
        out["original_s"] = {"value": t.seconds, "kind": "measured", "images": n_orig}
        out["retrain_s"] = {"value": t2.seconds, "kind": "measured", "images": len(retrain_set)}
        del model, retrained
    else:
        out["original_s"] = {"value": r18 * e, "kind": "estimated (epoch time × epochs)", "images": n_orig}
        out["retrain_s"] = {"value": r18 * e * len(retrain_set) / n_orig, "kind": "estimated (epoch time × epochs)",
                            "images": len(retrain_set)}
    # Save + load one ResNet-18 state through the store, as the prepare stage and a trial do.
    store = ArtifactStore(str(tmp / "store"))
    model = new_model("resnet18", hyp, device, seed)
    saves, loads = [], []
    for r in range(run["io_repeats"]):
        key = artifact_key("benchmark", repeat=r)
        t0 = time.perf_counter()
        store.save("original", key, {"state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                                     "seconds": 0.0})
        saves.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        art = store.load("original", key)
        model.load_state_dict(art["state"])
        sync(device)
        loads.append(time.perf_counter() - t0)
    out["store"] = {"save_s": summary(saves), "load_s": summary(loads),
                    "bytes": os.path.getsize(store.path("original", artifact_key("benchmark", repeat=0))),
                    "root": "local temporary folder"}
    return out, state


# --------------------------------------------------------------------------------------------------
# P3: the paper's study, priced with this run's unit costs
# --------------------------------------------------------------------------------------------------

P3_FORMULA = (
    "GPU-s = Σ_arch∈{resnet18,vgg16_bn} Σ_ds∈{cifar10,cifar100} seeds × [ T_original(arch,ds) + "
    "Σ_j=1..steps ( T_retrain(arch,ds,R_j) + T_eval + Σ_alg∈{scrub,neggrad_plus} ( T_unlearn(alg,arch,ds,R_j) + "
    "proxies × T_rum(alg,arch,ds,R_j) + (1 + proxies) × T_eval ) ) ]; seeds = steps = proxies = 5; "
    "R_j = 45,000 − 3,000·j (sequential retain); T_unlearn = images / P1 img/s (SCRUB: max_steps·3,000 + "
    "10·R_j; NegGrad+: 10·(R_j + paired forget batches)); T_rum = the same over RUM's 3 subsets of 1,000 "
    "(SCRUB 10+10+10 epochs, NegGrad+ 5+5+10); T_original = 45,000 · epochs / training img/s, T_retrain = "
    "R_j · epochs / training img/s (measured train epochs; CIFAR-10 30 epochs at batch 256, CIFAR-100 100 at "
    "batch 128); T_eval = 83,000 evaluation images (accuracies on forget/retain/val/test + the MIA's "
    "predictions) / P2 evaluation img/s; the SVC MIA's CPU-s (P2, per evaluation) are counted apart (off the "
    "GPU's critical path) and in the 'inline' variants; packed = GPU-h / S, S = best P1 aggregate "
    "concurrency speed-up over one process (an estimate: it assumes every job packs like the measured one)."
)


def estimate_study(img_s: dict, train_img_s: dict, eval_img_s: float, mia_s: float, speedup: float,
                   hyp: dict) -> dict:
    """GPU-hours of the paper's study (STUDY) from per-image unit costs; the formula is P3_FORMULA."""
    st, run = STUDY, hyp["run"]
    F_, bs, E, N = st["forget"], st["unlearn_batch"], st["unlearn_epochs"], st["n_train"]
    eval_images = 2 * F_ + (N - F_) + 5_000 + 2 * 10_000 + 10_000  # forget ×2, retain, val, test ×2, shadow
    t_eval = eval_images / eval_img_s

    def unlearn_s(alg, arch, ds, R, n_forget, epochs_list):
        total = 0
        for ep in epochs_list:
            if alg == "scrub":
                total += images_trial(R, n_forget, ep, min(st["scrub_max_steps"][(arch, ds)], ep))
            else:
                total += ep * images_per_epoch(alg, R, n_forget, bs)
        return total / img_s[(alg, arch)]

    parts = {"original": 0.0, "retrain": 0.0, "eval": 0.0}
    parts.update({f"{a}_vanilla": 0.0 for a in ALGORITHMS}, **{f"{a}_rum": 0.0 for a in ALGORITHMS})
    n_eval, per_cell = 0, {}
    for arch in ARCHS:
        for ds, dcfg in st["datasets"].items():
            tr = train_img_s[(arch, run[dcfg["train_batch"]])]
            cell = {"original": N * dcfg["train_epochs"] / tr, "retrain": 0.0, "unlearn": 0.0}
            for j in range(1, st["steps"] + 1):
                R = N - F_ * j
                cell["retrain"] += R * dcfg["train_epochs"] / tr
                for alg in ALGORITHMS:
                    van = unlearn_s(alg, arch, ds, R, F_, (E,))
                    rum = unlearn_s(alg, arch, ds, R, st["rum_subset"], st["rum_epochs"][alg])
                    parts[f"{alg}_vanilla"] += st["seeds"] * van
                    parts[f"{alg}_rum"] += st["seeds"] * st["proxies"] * rum
                    cell["unlearn"] += van + st["proxies"] * rum
                n_eval += st["seeds"] * (1 + len(ALGORITHMS) * (1 + st["proxies"]))
            per_cell[f"{arch}/{ds}"] = {k: v * st["seeds"] / 3600 for k, v in cell.items()}
            parts["original"] += st["seeds"] * cell["original"]
            parts["retrain"] += st["seeds"] * cell["retrain"]
    parts["eval"] = n_eval * t_eval
    gpu_s = sum(parts.values())
    mia_cpu_s = n_eval * mia_s
    return {
        "formula": P3_FORMULA,
        "gpu_hours": gpu_s / 3600,                                  # one job at a time
        "gpu_hours_packed": gpu_s / 3600 / speedup,                 # S jobs' worth per GPU (estimate)
        "gpu_hours_inline_mia": (gpu_s + mia_cpu_s) / 3600,
        "gpu_hours_inline_mia_packed": (gpu_s + mia_cpu_s) / 3600 / speedup,
        "mia_cpu_hours": mia_cpu_s / 3600,
        "speedup_S": speedup,
        "unit_costs": {"unlearn_img_s": img_s, "train_img_s": train_img_s, "eval_img_s": eval_img_s,
                       "eval_s_per_run": t_eval, "mia_s_per_run": mia_s},
        "breakdown_gpu_hours": {k: v / 3600 for k, v in parts.items()},
        "per_arch_dataset_gpu_hours": per_cell,
        "counts": {"unlearning_runs": len(ARCHS) * len(st["datasets"]) * st["seeds"] * st["steps"]
                   * len(ALGORITHMS) * (1 + st["proxies"]),
                   "retrains": len(ARCHS) * len(st["datasets"]) * st["seeds"] * st["steps"],
                   "originals": len(ARCHS) * len(st["datasets"]) * st["seeds"], "evaluations": n_eval},
        "assumptions": [
            "CIFAR-100 unlearning costs what CIFAR-10's does per image (10 unlearning epochs, its own max_steps); "
            "its training is priced with a measured batch-128 epoch × 100 epochs",
            "VGG-16-bn evaluation priced at ResNet-18's measured evaluation speed (an upper bound)",
            "RUM's memorization proxies come from learning events recorded while training the original: free",
            "one final evaluation per run and per retrain; the MIA's CPU seconds as measured in P2 "
            "(in --tiny they are for the tiny sets, not CIFAR's)",
        ],
        "paper_a10_gpu_hours": st["paper_a10_gpu_hours"],
    }


# --------------------------------------------------------------------------------------------------
# Provenance, table, main
# --------------------------------------------------------------------------------------------------


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


def provenance(args, device: torch.device, mode: str, source: str) -> dict:
    import sklearn
    import torchvision

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if device.type == "cuda":
        dev = gpu_name_no_context() or f"cuda:{device.index or 0}"
    else:
        dev = f"cpu ({platform.processor() or platform.machine()}, {cpus} cores)"
    commit = None
    with contextlib.suppress(Exception):
        r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        commit = r.stdout.strip() + ("+dirty" if dirty else "") if r.returncode == 0 else None
    return {
        "device": dev, "device_type": device.type, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda, "numpy": np.__version__, "sklearn": sklearn.__version__,
        "python": platform.python_version(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv, "command": shlex.join(["python", *sys.argv]), "mode": mode, "data": source,
        "cpus": cpus, "torch_threads": torch.get_num_threads(), "git_commit": commit,
        "script_sha256": hashlib.sha256(SCRIPT.read_bytes()).hexdigest()[:16],
        "hyp": json.loads(json.dumps(HYP[mode])),
    }


def _fmt(x: Optional[float]) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    a = abs(x)
    return f"{x:,.0f}" if a >= 100 else f"{x:.1f}" if a >= 10 else f"{x:.2f}" if a >= 1 else f"{x:.3f}" if a >= 0.01 else f"{x:.2g}"


def _ms(d) -> str:
    if not isinstance(d, dict) or d.get("mean") is None:
        return "—"
    return _fmt(d["mean"]) + (f" ± {_fmt(d['std'])}" if d.get("n", 0) > 1 else "")


def table(res: dict) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    p1 = res.get("P1", {})
    for k, v in p1.get("project", {}).items():
        if "img_s" in v:
            ratio = p1.get("ratio_vs_classic", {}).get(k)
            rows.append(("P1", f"project {k} img/s" + (" (DIVERGED)" if "diverged" in v else ""),
                         _ms(v["img_s"]) + (f"   ({_fmt(ratio)}× classic)" if ratio else "")))
        elif "error" in v:
            rows.append(("P1", f"project {k}", "error"))
    for k, v in p1.get("classic", {}).items():
        rows.append(("P1", f"classic {k} img/s (DataLoader×{v.get('num_workers', '?')}, fp32)",
                     _ms(v.get("img_s")) if "img_s" in v else "error"))
    for kind in ("plain", "mps"):
        conc = p1.get("concurrency", {}).get(kind, {})
        if "note" in conc:
            rows.append(("P1", f"concurrency {kind}", conc["note"]))
        for n, v in conc.get("levels", {}).items():
            if "error" in v:
                rows.append(("P1", f"{n} procs {kind} aggregate img/s", "error: " + v["error"][:60]))
            else:
                sp = v.get("speedup_vs_1")
                rows.append(("P1", f"{n} procs {kind} aggregate img/s ({'/'.join(CONC_JOB)})",
                             _fmt(v["aggregate_img_s"]) + (f"   ({_fmt(sp)}× one process)" if sp else "")))
    if "best_aggregate" in p1:
        b = p1["best_aggregate"]
        rows.append(("P1", f"best aggregate / classic resnet18 [{b['where']}]", _fmt(b.get("ratio_vs_classic")) + "×"))
    p2 = res.get("P2", {})
    for k, lab in (("setup_s", "trial setup s"), ("unlearn_s", "trial unlearning s"), ("eval_s", "trial evaluation s (GPU)"),
                   ("mia_s", "trial SVC MIA s (CPU)")):
        if k in p2:
            rows.append(("P2", lab, _ms(p2[k])))
    for k, lab in (("trials_per_gpu_hour", "trials / GPU-hour (MIA off GPU path, × S)"),
                   ("trials_per_gpu_hour_inline_mia", "trials / GPU-hour (MIA inline, × S)")):
        if p2.get(k) is not None:
            rows.append(("P2", lab, _fmt(p2[k])))
    p5 = res.get("P5", {})
    if p5:
        rows.append(("P5", "peak allocated / reserved GiB",
                     "—" if p5.get("max_memory_allocated_gib") is None else
                     f"{_fmt(p5['max_memory_allocated_gib'])} / {_fmt(p5['max_memory_reserved_gib'])}"))
    art = res.get("artifacts", {})
    for k, v in art.get("train_epoch", {}).items():
        rows.append(("art", f"train epoch s {k}", _ms(v["epoch_s"])))
    for k in ("original_s", "retrain_s"):
        if k in art:
            rows.append(("art", f"{k[:-2]} resnet18 s ({art['recipe_epochs']} ep, {art[k]['kind'].split(' ')[0]})",
                         _fmt(art[k]["value"])))
    if "store" in art:
        rows.append(("art", "ArtifactStore save / load s (resnet18)",
                     f"{_ms(art['store']['save_s'])} / {_ms(art['store']['load_s'])}"))
    p3 = res.get("P3", {})
    if "gpu_hours" in p3:
        rows.append(("P3", "study GPU-hours, one process", _fmt(p3["gpu_hours"])))
        rows.append(("P3", f"study GPU-hours, packed (÷ S={_fmt(p3['speedup_S'])})", _fmt(p3["gpu_hours_packed"])))
        rows.append(("P3", "  of which unlearning / retrain+original / eval",
                     " / ".join(_fmt(x) for x in (
                         sum(v for k, v in p3["breakdown_gpu_hours"].items() if "vanilla" in k or "rum" in k),
                         p3["breakdown_gpu_hours"]["retrain"] + p3["breakdown_gpu_hours"]["original"],
                         p3["breakdown_gpu_hours"]["eval"]))))
        rows.append(("P3", "MIA CPU-hours (apart)", _fmt(p3["mia_cpu_hours"])))
    for t in res.get("targets", []):
        verdict = "n/a (not a GPU)" if t["met"] is None else ("MET" if t["met"] else "MISSED")
        rows.append(("target", f"{t['name']}: {t['target']}", f"{_fmt(t['measured'])}  {verdict}"))
    return rows


def print_header(prov: dict) -> None:
    log(f"# benchmarks/pipeline.py — unlearning pipeline throughput and cost ({prov['mode']} mode)")
    log(f"# device: {prov['device']} | torch {prov['torch']} (CUDA {prov['cuda']}) | {prov['date']}")
    log(f"# command: {prov['command']}")
    log(f"# data: {prov['data']} | git {prov['git_commit']} | mean ± std over n repeats, warm-up excluded")


def print_table(prov: dict, res: dict) -> None:
    rows = table(res)
    w1 = max(len(r[1]) for r in rows) if rows else 10
    log("")
    print_header(prov)
    if prov["device_type"] != "cuda":
        log("# CPU FIGURES: a code-path smoke run, not a measurement of the GPU pipeline")
    log(f"{'sec':<7}| {'measurement':<{w1}} | value")
    log(f"{'-' * 7}|-{'-' * w1}-|{'-' * 30}")
    for sec, what, val in rows:
        log(f"{sec:<7}| {what:<{w1}} | {val}")
    for note in res.get("notes", []):
        log(f"# note: {note}")


def _clean(o):
    """JSON-safe: non-finite floats → null, tuples → lists, tuple keys → 'a/b'."""
    if isinstance(o, dict):
        return {("/".join(map(str, k)) if isinstance(k, tuple) else str(k)): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (np.floating, np.integer)):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def section(res: dict, name: str, fn: Callable[[], Any]):
    """Run one section; an exception is recorded (and fails the run at the end) instead of losing the rest."""
    t0 = time.perf_counter()
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 — recorded in the JSON, exit status 1 at the end
        res.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}\n" + traceback.format_exc()[-2000:]
        log(f"[{name}] FAILED: {type(e).__name__}: {e}")
        return None
    finally:
        res.setdefault("section_seconds", {})[name] = time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Figures go to BENCHMARKS.md with date, device, torch version and command.")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run: width-0.125 models, a few hundred images")
    ap.add_argument("--out", help="write every figure + provenance as JSON here")
    ap.add_argument("--data", help="cifar10-jpeg.npz (real CIFAR-10); default: synthetic CIFAR-shaped uint8 data")
    ap.add_argument("--skip", nargs="+", default=[], choices=SECTIONS, metavar="SECTION",
                    help=f"sections to leave out: {', '.join(SECTIONS)}")
    ap.add_argument("--with-training", action="store_true",
                    help="train a ResNet-18 original and a retrain with the 30-epoch recipe (~2 min on an H100) "
                         "instead of estimating them from epoch times (always on in --tiny)")
    ap.add_argument("--profile", action="store_true", help="torch.profiler top-15 kernels of one SCRUB epoch")
    ap.add_argument("--concurrency", help="process counts, comma-separated (default 2,4,8; --tiny: 2)")
    ap.add_argument("--repeats", type=int, help="timed repeats for P1 and the baseline (default 3; --tiny: 2)")
    ap.add_argument("--device", help="torch device (default: cuda when present, else cpu)")
    ap.add_argument("--seed", type=int, default=0)
    for flag, kw in (("--worker", dict(action="store_true")), ("--worker-pool", {}), ("--worker-barrier", {}),
                     ("--worker-epochs", dict(type=int, default=1)), ("--worker-id", dict(type=int, default=0))):
        ap.add_argument(flag, help=argparse.SUPPRESS, **kw)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args)

    mode = "tiny" if args.tiny else "full"
    hyp = HYP[mode]
    if args.repeats:
        hyp["run"]["repeats"] = args.repeats
    if args.concurrency:
        hyp["run"]["concurrency"] = tuple(int(c) for c in args.concurrency.split(",") if c.strip())
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    if not cuda and args.tiny:
        torch.set_num_threads(1)  # a 2-core CI runner shares its cores with DataLoader and worker processes
    if cuda:
        torch.backends.cudnn.benchmark = True  # what prepare_model sets; the baseline gets it too
    skip = set(args.skip)
    tmp = Path(tempfile.mkdtemp(prefix="unlearn-bench-"))
    res: dict[str, Any] = {"notes": []}
    t_start = time.perf_counter()
    try:
        log(f"loading data ({'synthetic' if args.data is None else args.data}) ...")
        x_tr, y_tr, x_te, y_te, source = load_pool(hyp, args.data, args.seed)
        prov = provenance(args, device, mode, source)
        res["provenance"] = prov
        print_header(prov)
        lay = layout(hyp)
        p1: dict[str, Any] = {"project": {}, "classic": {}, "concurrency": {}, "ratio_vs_classic": {}}
        res["P1"] = p1

        # Concurrency first: this process must hold no CUDA context while the MPS daemon runs, and none of
        # its memory while the trial processes share the GPU.
        if "concurrency" not in skip or ("mps" not in skip and cuda):
            n_pool = len(lay["retain"]) + len(lay["forget"])
            pool_file = str(tmp / "pool.npz")
            np.savez(pool_file, x=x_tr[:n_pool], y=y_tr[:n_pool])
            levels = hyp["run"]["concurrency"]
            if "concurrency" not in skip:
                log(f"[P1] concurrency, plain time-slicing: {'/'.join(CONC_JOB)} trial processes")
                lv = section(res, "concurrency", lambda: measure_concurrency(levels, pool_file, tmp, hyp, args))
                p1["concurrency"]["plain"] = {"levels": lv or {}}
                for n, v in (lv or {}).items():  # a failed plain level is a bug here; under MPS, a note
                    if "error" in v:
                        res.setdefault("errors", {})[f"concurrency {n}"] = f"{v['error']}\n{v.get('stderr_tail', '')}"
            if "mps" not in skip:
                if not cuda:
                    p1["concurrency"]["mps"] = {"note": "no CUDA device: MPS skipped"}
                else:
                    log("[P1] concurrency under CUDA MPS")
                    with mps_daemon(tmp) as (extra, note):
                        p1["concurrency"]["mps"] = {"note": note}
                        if extra is not None:
                            lv = section(res, "mps", lambda: measure_concurrency(levels, pool_file, tmp, hyp, args, extra))
                            p1["concurrency"]["mps"]["levels"] = lv or {}
                            p1["concurrency"]["mps"]["control_log_tail"] = _tail(tmp / "mps-log" / "control.log", 600)

        if cuda:  # this process's first CUDA call: the MPS daemon is gone by now
            prov["device_torch"] = torch.cuda.get_device_name(device)
            if prov["device"].startswith("cuda:"):  # nvidia-smi was not there
                prov["device"] = prov["device_torch"]
        train_pool = DeviceData.from_arrays(x_tr, y_tr, device)
        test = DeviceData.from_arrays(x_te, y_te, device)
        retain, forget = train_pool.subset(lay["retain"]), train_pool.subset(lay["forget"])

        if "p1" not in skip:
            jobs = [(a, m, False) for m in ARCHS for a in ALGORITHMS] + [("scrub", "resnet18", True)]
            for alg, arch, aug in jobs:
                name = f"{alg}/{arch}" + ("+augment" if aug else "")
                log(f"[P1] project pipeline {name} ...")
                r = section(res, f"p1 {name}", lambda: measure_project(alg, arch, retain, forget, hyp, device, augment=aug,
                                                                        seed=args.seed))
                p1["project"][name] = r if r is not None else {"error": res["errors"][f"p1 {name}"][:300]}
                if r is not None:
                    log(f"    {_ms(r['img_s'])} img/s")
                gc.collect()
        if "baseline" not in skip:
            cpus = prov["cpus"] or 1
            nw = min(8, cpus)
            for arch in ARCHS:
                log(f"[P1] classic baseline {arch} (DataLoader, {nw} workers, fp32) ...")
                r = section(res, f"baseline {arch}", lambda: measure_classic(arch, x_tr[lay["retain"]], y_tr[lay["retain"]],
                                                                              hyp, device, nw, args.seed))
                p1["classic"][arch] = r if r is not None else {"error": res["errors"][f"baseline {arch}"][:300]}
                if r is not None:
                    log(f"    {_ms(r['img_s'])} img/s")
                gc.collect()
        for name, v in p1["project"].items():
            arch = name.split("/")[1].split("+")[0]
            base = _mean(p1["classic"].get(arch, {}).get("img_s"))
            if _mean(v.get("img_s")) and base:
                p1["ratio_vs_classic"][name] = v["img_s"]["mean"] / base

        # Speed-up of N processes over one: the in-process P1 figure of the same job, measured in this run.
        single = _mean(p1["project"].get("/".join(CONC_JOB), {}).get("img_s"))
        classic_r18 = _mean(p1["classic"].get("resnet18", {}).get("img_s"))
        best = None
        for kind, conc in p1["concurrency"].items():
            for n, v in conc.get("levels", {}).items():
                if "aggregate_img_s" in v:
                    v["speedup_vs_1"] = v["aggregate_img_s"] / single if single else None
                    if best is None or v["aggregate_img_s"] > best["aggregate_img_s"]:
                        best = {"aggregate_img_s": v["aggregate_img_s"], "where": f"{n} procs {kind}",
                                "speedup_vs_1": v["speedup_vs_1"]}
        if best is not None:
            best["ratio_vs_classic"] = best["aggregate_img_s"] / classic_r18 if classic_r18 else None
            p1["best_aggregate"] = best
        speedup = max(1.0, best["speedup_vs_1"]) if best and best.get("speedup_vs_1") else 1.0
        if not (best and best.get("speedup_vs_1")):
            res["notes"].append("no concurrency speed-up measured in this run: S = 1 in P2/P3")

        state = None
        if "artifacts" not in skip:
            log("[art] training epochs, original/retrain, ArtifactStore ...")
            r = section(res, "artifacts", lambda: measure_artifacts(train_pool, hyp, device, tmp,
                                                                    with_training=args.with_training or args.tiny,
                                                                    seed=args.seed))
            if r is not None:
                res["artifacts"], state = r
            gc.collect()

        if "p2" not in skip:
            log("[P2] one full-fidelity SCRUB ResNet-18 trial ...")
            r = section(res, "p2", lambda: measure_trial(train_pool, test, hyp, device, state=state, seed=args.seed))
            if r is not None:
                p2, peak = r
                gpu_s = sum(_mean(p2[k]) for k in ("setup_s", "unlearn_s", "eval_s"))
                p2["trial_gpu_s"] = gpu_s
                p2["speedup_S"] = speedup
                p2["trials_per_gpu_hour"] = 3600.0 / gpu_s * speedup
                p2["trials_per_gpu_hour_inline_mia"] = 3600.0 / (gpu_s + _mean(p2["mia_s"])) * speedup
                p2["trials_per_gpu_hour_note"] = (
                    "estimate: 3600 / (setup + unlearning + evaluation s) × S, S = best P1 aggregate speed-up over "
                    "one process; 'inline' also counts the SVC MIA's CPU seconds inside the trial")
                p2["per_epoch_eval_extra_s"] = (p2["config"]["epochs"] - 1) * (_mean(p2["eval_s"]) + _mean(p2["mia_s"]))
                res["P2"] = p2
                res["P5"] = peak or {"max_memory_allocated_gib": None, "max_memory_reserved_gib": None,
                                     "note": "no CUDA device: GPU memory not measured"}
                if peak:
                    res["P5"]["what"] = "one ResNet-18 SCRUB trial (P2, first repeat), its data resident; " \
                                        "excludes the CUDA context (~0.5 GiB)"
                    conc_mem = [v.get("max_memory_allocated_gib_per_process") for c in p1["concurrency"].values()
                                for v in c.get("levels", {}).values() if isinstance(v, dict)]
                    conc_mem = [m for m in conc_mem if m is not None]
                    if conc_mem:
                        res["P5"]["concurrency_worker_max_allocated_gib"] = max(conc_mem)

        if args.profile:
            log("[profile] one SCRUB ResNet-18 epoch ...")
            r = section(res, "profile", lambda: profile_epoch(retain, forget, hyp, device))
            if r is not None:
                res["profile"] = r

        if "p3" not in skip:
            def p3():
                img = {}
                for alg in ALGORITHMS:
                    for arch in ARCHS:
                        v = _mean(p1["project"].get(f"{alg}/{arch}", {}).get("img_s"))
                        if not v:
                            return {"skipped": f"needs P1 {alg}/{arch}"}
                        img[(alg, arch)] = v
                if "artifacts" not in res or "P2" not in res:
                    return {"skipped": "needs the artifacts and P2 sections"}
                tr = {(v["arch"], v["batch"]): _mean(v["img_s"]) for v in res["artifacts"]["train_epoch"].values()}
                ev = res["P2"]["eval_images"] / _mean(res["P2"]["eval_s"])
                return estimate_study(img, tr, ev, _mean(res["P2"]["mia_s"]), speedup, hyp)
            r = section(res, "p3", p3)
            if r is not None:
                res["P3"] = r

        res["targets"] = targets(res, cuda)
    finally:
        res["total_seconds"] = time.perf_counter() - t_start
        shutil.rmtree(tmp, ignore_errors=True)
    if "provenance" in res:
        print_table(res["provenance"], res)
    log(f"# total {res['total_seconds']:.1f} s")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(_clean(res), indent=2, allow_nan=False) + "\n")
        log(f"# wrote {args.out}")
    if res.get("errors"):
        log(f"# {len(res['errors'])} section(s) failed: {', '.join(res['errors'])}")
        return 1
    return 0


def targets(res: dict, cuda: bool) -> list[dict]:
    """The H100 targets against this run's figures; `met` is None off a GPU (CPU figures judge nothing)."""
    def judge(v, ok):
        return None if (not cuda or v is None) else bool(ok(v))

    p1 = res.get("P1", {}).get("best_aggregate", {}).get("ratio_vs_classic")
    p2 = res.get("P2", {}).get("trials_per_gpu_hour")
    p3 = res.get("P3", {}).get("gpu_hours_packed")
    p5 = res.get("P5", {}).get("max_memory_allocated_gib")
    T = TARGETS
    return [
        {"name": "P1", "target": f"best aggregate ≥ {T['p1_ratio']}× classic", "measured": p1,
         "met": judge(p1, lambda v: v >= T["p1_ratio"])},
        {"name": "P2", "target": f"≥ {T['p2_trials_per_hour']:.0f} trials/GPU-hour", "measured": p2,
         "met": judge(p2, lambda v: v >= T["p2_trials_per_hour"])},
        {"name": "P3", "target": f"study ≤ {T['p3_gpu_hours']} GPU-hours (packed)", "measured": p3,
         "met": judge(p3, lambda v: v <= T["p3_gpu_hours"])},
        {"name": "P5", "target": f"peak ≤ {T['p5_gib']} GiB", "measured": p5,
         "met": judge(p5, lambda v: v <= T["p5_gib"])},
    ]


if __name__ == "__main__":
    sys.exit(main())
