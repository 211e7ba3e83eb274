"""Prepare stage: build every original, retrain and reference metric a search needs, once, as Ray tasks.

Originals and retrains are the expensive part of a study (a retrain costs about a minute of an H100; a trial
about ten seconds), so they are built before any trial starts, in parallel across the cluster (on GPUs when
there are any), into the shared artifact store. Trials then only read them.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import ray

from unlearn_core.data import Dataset
from unlearn_core.experiment import ExperimentSpec, Workspace


def _prepare_one(spec: ExperimentSpec, dataset: Dataset, cpus: float, proxies: Sequence[str], steps: int) -> dict:
    import torch

    from unlearn_core.proxies import memorization

    torch.set_num_threads(max(1, int(cpus)))
    t0 = time.perf_counter()
    ws = Workspace(spec, dataset)
    _, orig = ws.original()
    for proxy in proxies:  # RUM and the mix need memorization scores; cached in the store like the models
        memorization(ws, proxy)
    ref = ws.retrain_metrics(ws.select_forget())  # request 1: the same for every configuration
    retrain_seconds = float(ref["seconds"])
    if steps > 1 and spec.forget != "mix":
        # Random and class requests do not depend on the model, so all k retrains can be built now: a run of
        # the k requests with a zero-epoch fine-tune selects exactly the sets every trial will select.
        from unlearn_core.sequential import run_sequential

        rec = run_sequential(spec, "finetune", {"epochs": 0}, steps=steps, workspace=ws)
        retrain_seconds = rec["retrain_seconds"]
    # With the mix, requests 2..k are chosen on each trial's own unlearned model (reference §3.5): their
    # retrains depend on the configuration and are built (and cached) by the trials themselves.
    return {"spec": dataclasses.asdict(spec), "original_seconds": float(orig["seconds"]),
            "retrain_seconds": retrain_seconds, "wall_seconds": time.perf_counter() - t0,
            "retrain": {k: ref[k] for k in ("forget_acc", "retain_acc", "test_acc", "mia")}}


def prepare(specs: Sequence[ExperimentSpec], datasets: dict, *, cpus: float, gpus: float,
            proxies: Sequence[str] = (), steps: int = 1, log: Callable[[str], None] = print) -> list[dict]:
    """Run `_prepare_one` for every spec as a Ray task; print progress as each finishes; return their reports."""
    task = ray.remote(_prepare_one).options(num_cpus=cpus, num_gpus=1 if gpus > 0 else 0, max_retries=2)
    refs = {task.remote(s, datasets[s.dataset], cpus, tuple(proxies), steps): s for s in specs}
    log(f"prepare: {len(refs)} original/retrain pair(s) to build or load "
        f"({'GPU' if gpus > 0 else 'CPU'} tasks)")
    out, pending = [], list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        rep = ray.get(done[0])
        s = refs[done[0]]
        out.append(rep)
        log(f"prepare {len(out)}/{len(refs)}: {s.dataset} {s.arch} seed {s.seed} ready "
            f"(original {rep['original_seconds']:.1f}s, retrain {rep['retrain_seconds']:.1f}s of training; "
            f"task {rep['wall_seconds']:.1f}s)")
    return out
