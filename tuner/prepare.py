"""Prepare stage: build every original, retrain and reference metric a search needs, once, as Ray tasks.

Originals and retrains are the expensive part of a study (a retrain costs about a minute of an H100; a trial
about ten seconds), so they are built before any trial starts, in parallel across the cluster (on GPUs when
there are any), into the shared artifact store. Trials then only read them.

A finished task leaves its report in the store (tuner/records.py); a resumed search, or a second search with the
same settings, reads it on the driver and starts no task for that spec. (Should the artifacts be gone since,
the trials rebuild them through the store: slower, never wrong.)
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import ray

from unlearn_core.spec import ExperimentSpec

from . import records
from .progress import as_completed
from .task_names import prepare_task


def _prepare_one(spec: ExperimentSpec, dataset, cpus: float, proxies: Sequence[str], requests: int,
                 ranking_model: str) -> dict:
    from unlearn_core.environment import use_cpus
    from unlearn_core.proxies import memorization
    from unlearn_core.references import original
    from unlearn_core.run import start
    from unlearn_core.workspace import Workspace

    use_cpus(cpus)
    t0 = time.perf_counter()
    ws = Workspace(spec, dataset)
    _, orig = original(ws)
    for proxy in proxies:  # RUM and the mix need memorization scores; cached in the store like the models
        memorization(ws, proxy)
    shared = requests == 1 or spec.forget != "mix" or ranking_model == "retrain"
    # A zero-epoch run selects exactly the sets every trial will select and builds their retrains — unless the
    # sets of requests 2..k depend on each trial's own model (a mix ranked by the "current" model, the reference's
    # rule): those retrains are built, and cached, by the trials themselves.
    # Both views: trials read the selection view and finals both, so every reference metric is built here once
    # (not by several concurrent trials at their first evaluation).
    rec = start(spec, "finetune", {"epochs": 0}, ws, requests=requests if shared else 1,
                ranking_model=ranking_model, views=("selection", "report")).run()
    first = rec["requests"][0]["retrain"]
    report = {"spec": {**dataclasses.asdict(spec), **ws.numerics.record()}, "original_seconds": float(orig["seconds"]),
              "retrain_seconds": rec["retrain_seconds"], "wall_seconds": time.perf_counter() - t0,
              "retrain": {k: first[k] for k in ("forget_acc", "retain_acc", "test_acc", "mia")}}
    ws.store.save("prepared", records.prepared_key(spec, dataset, proxies, requests, ranking_model, ws.device.type),
                  report)
    return report


def prepare(specs: Sequence[ExperimentSpec], datasets: dict, *, cpus: float, gpus: float,
            proxies: Sequence[str] = (), requests: int = 1, ranking_model: str = "current",
            log: Callable[[str], None] = print) -> list[dict]:
    """Run `_prepare_one` for every spec not prepared yet as a Ray task; print progress as each finishes; return
    the reports of all specs."""
    proxies = tuple(proxies)
    out, todo = [], []
    for s in specs:
        device = s.device or ("cuda" if gpus > 0 else "cpu")  # where the task will run (it keys by what it finds)
        key = records.prepared_key(s, datasets[s.dataset], proxies, requests, ranking_model, device)
        rep = records.load(s, "prepared", key)
        if rep is None:
            todo.append(s)
        else:
            out.append(rep)
            log(f"prepare: {s.dataset} {s.arch} seed {s.seed} already prepared in the store")
    if not todo:
        return out
    task = ray.remote(num_cpus=cpus, num_gpus=1 if gpus > 0 else 0, max_retries=2)(_prepare_one)
    jobs = {task.options(name=prepare_task(s)).remote(s, datasets[s.dataset], cpus, proxies, requests, ranking_model): s
            for s in todo}
    log(f"prepare: {len(jobs)} original/retrain set(s) to build or load ({'GPU' if gpus > 0 else 'CPU'} tasks)")
    for n, (s, rep) in enumerate(as_completed(jobs), 1):
        out.append(rep)
        log(f"prepare {n}/{len(jobs)}: {s.dataset} {s.arch} seed {s.seed} ready "
            f"(original {rep['original_seconds']:.1f}s, retrain {rep['retrain_seconds']:.1f}s of training; "
            f"task {rep['wall_seconds']:.1f}s)")
    return out
