"""P1 in one process: images/s of the project's unlearning epochs, and how they compare.

An epoch is `Unlearner.next_epoch()` of the registered algorithm over device-resident data (`DeviceData`),
exactly what the run driver steps; for SCRUB every timed epoch is a max-step epoch (forget + retain pass).
`compare` sets these figures against the classic baseline (classic.py) and the concurrent processes
(concurrency.py), and gives S, the speed-up that P2 and P3 use for packing jobs onto one GPU.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from unlearn_core.batching import DeviceData
from unlearn_core.errors import LossDiverged

from benchmarks.study_cost import images_per_epoch
from benchmarks.timing import Timer, mean_of, summary, sync
from benchmarks.workload import new_model, unlearn_config, unlearner

CONC_JOB = ("scrub", "resnet18")  # the job the concurrency sweep runs (the anchors' ResNet-18)


def measure_project(algorithm: str, arch: str, retain: DeviceData, forget: DeviceData, hyp: dict,
                    device: torch.device, *, augment: bool = False, seed: int = 0) -> dict:
    """img/s of unlearning epochs; the first `warmup_epochs` are left out of the figures."""
    run = hyp["run"]
    bs, warm, n = run["batch"], run["warmup_epochs"], run["repeats"]
    cfg = unlearn_config(algorithm, warm + n, bs, augment=augment)
    unl = unlearner(algorithm, new_model(arch, hyp, device, seed), forget, retain, cfg, seed=seed)
    imgs = images_per_epoch(algorithm, len(retain), len(forget), bs)
    secs, diverged = [], None
    try:
        for e in range(warm + n):
            with Timer(device) as t:
                unl.next_epoch()
            if e >= warm:
                secs.append(t.seconds)
    except LossDiverged as err:  # a throughput run must not hide it: report it, keep what was measured
        diverged = str(err)
    out = {"images_per_epoch": imgs, "epoch_s": summary(secs), "img_s": summary(imgs / s for s in secs),
           "warmup_epochs": warm, "augment": augment, "config": dataclasses.asdict(cfg)}
    if diverged:
        out["diverged"] = diverged
    return out


def compare(p1: dict) -> tuple[float, Optional[str]]:
    """Fill in P1's ratios to the classic baseline, each concurrency level's speed-up over one process and the
    best aggregate. Returns (S, note): S = the best speed-up (at least 1), note when none was measured."""
    for name, v in p1["project"].items():
        arch = name.split("/")[1].split("+")[0]
        base = mean_of(p1["classic"].get(arch, {}).get("img_s"))
        if mean_of(v.get("img_s")) and base:
            p1["ratio_vs_classic"][name] = v["img_s"]["mean"] / base
    # Speed-up of N processes over one: the in-process figure of the same job, measured in this run.
    single = mean_of(p1["project"].get("/".join(CONC_JOB), {}).get("img_s"))
    classic_r18 = mean_of(p1["classic"].get("resnet18", {}).get("img_s"))
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
    if best and best.get("speedup_vs_1"):
        return max(1.0, best["speedup_vs_1"]), None
    return 1.0, "no concurrency speed-up measured in this run: S = 1 in P2/P3"


def profile_epoch(retain: DeviceData, forget: DeviceData, hyp: dict, device: torch.device) -> dict:
    """torch.profiler top-15 kernels (self device time) of one SCRUB ResNet-18 epoch after a warm-up epoch."""
    from torch.profiler import ProfilerActivity, profile

    cfg = unlearn_config("scrub", 2, hyp["run"]["batch"])
    unl = unlearner("scrub", new_model("resnet18", hyp, device, 0), forget, retain, cfg, seed=0)
    unl.next_epoch()
    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        unl.next_epoch()
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
