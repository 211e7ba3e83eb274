"""P2 + P5: what one full-fidelity trial costs — SCRUB with the paper's C10-R18 config on ResNet-18, then the
final evaluation — measured through the project's own calls, not a copy of them.

Each timed trial makes the calls the run driver (`unlearn_core.run`) makes for one request: the model
(`references.original(ws)` from the store when this run trained it, else `ws.new_model()`), then
`ALGORITHMS.get("scrub").for_request(model, Request(ws, forget_ids, [], seed), cfg)`, `next_epoch()` until its
epochs are done, `finish()`, and `ws.evaluate(model, forget_ids)` — `metrics.evaluate`: accuracies on forget /
retain / val / test and the SVC MIA with its own shadow sample. Setup, unlearning, evaluation (GPU) and the MIA's
SVC (CPU) are timed apart; the SVC's seconds are read by wrapping `metrics.svc_mia` for the call (`svc_timer`).
Driving a whole `Run` needs the original and its retrain trained first (minutes on a GPU), so that is done only
when the artifacts section built them (`--with-training`, `--tiny`): one trial through
`run.start(...).epochs()` is then timed as well (`run_driver`), with what the driver adds (weight hashes, the
reference's cached metrics, the record).
"""
from __future__ import annotations

import contextlib
import gc
import time
from typing import Optional

import numpy as np
import torch

from unlearn_core.errors import LossDiverged
from unlearn_core.unlearning import ALGORITHMS, Request, make_config

from benchmarks.study_cost import images_trial
from benchmarks.timing import GIB, Timer, mean_of, summary, sync

ALGORITHM = "scrub"
PAPER_C10_R18 = dict(lr=0.01, alpha=0.9, gamma=0.9, temperature=4.0)  # Table C.2 (+ epochs, max_steps, batch)
METRICS = ("forget_acc", "retain_acc", "val_acc", "test_acc", "mia")


def trial_params(hyp: dict) -> dict:
    run = hyp["run"]
    return {**PAPER_C10_R18, "epochs": run["trial_epochs"], "max_steps": run["trial_max_steps"],
            "forget_batch_size": run["batch"], "retain_batch_size": run["batch"]}


@contextlib.contextmanager
def svc_timer(device: torch.device):
    """Within the block, every `unlearn_core.metrics.svc_mia` call (the MIA's SVC fit + predict, on the CPU)
    adds its seconds to the yielded list. `metrics.evaluate` looks the function up when it calls it, so the
    evaluation itself is untouched; the predictions it feeds the SVC are finished first (sync)."""
    from unlearn_core import metrics

    spent: list[float] = []
    real = metrics.svc_mia

    def timed(*args, **kwargs):
        sync(device)
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - t0)

    metrics.svc_mia = timed
    try:
        yield spent
    finally:
        metrics.svc_mia = real


def measure_trial(ws, forget_ids: np.ndarray, hyp: dict, *, trained: bool) -> tuple[dict, Optional[dict]]:
    """`trial_repeats` trials on the workspace; returns (P2 figures, P5 peak memory of the first or None).

    `trained`: the original is in ws.store (the artifacts section built it); the trials start from it."""
    from unlearn_core import references

    device, cuda, seed = ws.device, ws.device.type == "cuda", ws.spec.seed
    params = trial_params(hyp)
    cfg = make_config(ALGORITHM, params)
    cls = ALGORITHMS.get(ALGORITHM)
    forget, retain = ws.sets(forget_ids)
    reps, peak = [], None
    for r in range(hyp["run"]["trial_repeats"]):
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            if r == 0:
                torch.cuda.reset_peak_memory_stats()  # P5: from here on; the workspace's data is already resident
        with Timer(device) as t_setup:
            model = references.original(ws)[0] if trained else ws.new_model()
            unl = cls.for_request(model, Request(ws, forget_ids, [], seed), cfg)
        diverged = None
        with Timer(device) as t_unl:
            try:
                while unl.epoch < unl.epochs:
                    unl.next_epoch()
            except LossDiverged as err:
                diverged = str(err)
            unl.finish()
        with svc_timer(device) as svc, Timer(device) as t_eval:
            m = ws.evaluate(unl.model, forget_ids)
        mia_s = sum(svc)
        rec = {"setup_s": t_setup.seconds, "unlearn_s": t_unl.seconds, "eval_s": t_eval.seconds - mia_s,
               "mia_s": mia_s, "metrics": {k: m[k] for k in METRICS}}
        if diverged:
            rec["diverged"] = diverged
        reps.append(rec)
        if cuda and r == 0:
            peak = {"max_memory_allocated_gib": torch.cuda.max_memory_allocated() / GIB,
                    "max_memory_reserved_gib": torch.cuda.max_memory_reserved() / GIB}
        del unl, model
    keys = ("setup_s", "unlearn_s", "eval_s", "mia_s")
    out = {k: summary(r[k] for r in reps) for k in keys}
    sizes = {"retain": len(retain), "forget": len(forget), "val": len(ws.val), "test": len(ws.test)}
    out.update(driver="for_request + next_epoch + ws.evaluate (the run driver's calls)",
               images=images_trial(len(retain), len(forget), cfg.epochs, cfg.max_steps),
               eval_images=sum(sizes.values()),  # metrics.evaluate predicts each set once; the MIA reuses them
               sizes=sizes, config={f: getattr(cfg, f) for f in ("lr", "epochs", "max_steps", "alpha", "gamma",
                                                                 "temperature", "retain_batch_size")},
               original="trained in this run (references.original, loaded from the store in setup)" if trained else
               "random init (unlearning/eval seconds do not depend on it; the SVC's may)",
               metrics_last=reps[-1]["metrics"])
    if any("diverged" in r for r in reps):
        out["diverged"] = [r.get("diverged") for r in reps]
    return out, peak


def measure_run(ws, forget_ids: np.ndarray, hyp: dict, p2: dict) -> dict:
    """One trial through `run.start(spec, "scrub", params, ws, forget_ids=...).epochs()`, end to end. Needs the
    original and the retrain without `forget_ids` in ws.store; `p2` (measure_trial's figures) gives the
    driver's overhead over the bare calls."""
    from unlearn_core.references import reference_metrics
    from unlearn_core.run import start

    device, params = ws.device, trial_params(hyp)
    reference_metrics(ws, forget_ids)  # the retrain's metrics: a prepare stage's work, cached before timing
    gc.collect()
    with svc_timer(device) as svc, Timer(device) as t:
        run = start(ws.spec, ALGORITHM, params, ws, forget_ids=forget_ids)
        rows = list(run.epochs())
    rec = run.record()
    mia_s = sum(svc)
    gpu_s = t.seconds - mia_s
    parts = [mean_of(p2[k]) for k in ("setup_s", "unlearn_s", "eval_s")]
    return {"how": "unlearn_core.run.start(spec, 'scrub', params, ws, forget_ids=...).epochs(), one request",
            "wall_s": t.seconds, "unlearn_s": rec["unlearn_seconds"], "mia_s": mia_s, "trial_gpu_s": gpu_s,
            "other_s": t.seconds - rec["unlearn_seconds"] - mia_s,
            "driver_overhead_s": gpu_s - sum(parts) if None not in parts else None,
            "rows": len(rows), "tow": rec["tow"], "tow_mia": rec["tow_mia"],
            "metrics": {k: rec[k] for k in METRICS}, "diverged": rec["diverged"]}


def per_gpu_hour(p2: dict, speedup: float) -> None:
    """Add trials per GPU-hour to P2: 3600 / (setup + unlearning + evaluation s) × S (an estimate)."""
    gpu_s = sum(mean_of(p2[k]) for k in ("setup_s", "unlearn_s", "eval_s"))
    p2["trial_gpu_s"] = gpu_s
    p2["speedup_S"] = speedup
    p2["trials_per_gpu_hour"] = 3600.0 / gpu_s * speedup
    p2["trials_per_gpu_hour_inline_mia"] = 3600.0 / (gpu_s + mean_of(p2["mia_s"])) * speedup
    p2["trials_per_gpu_hour_note"] = (
        "estimate: 3600 / (setup + unlearning + evaluation s) × S, S = best P1 aggregate speed-up over "
        "one process; 'inline' also counts the SVC MIA's CPU seconds inside the trial")
    p2["per_epoch_eval_extra_s"] = (p2["config"]["epochs"] - 1) * (mean_of(p2["eval_s"]) + mean_of(p2["mia_s"]))
    if "run_driver" in p2:
        p2["run_driver"]["trials_per_gpu_hour"] = 3600.0 / p2["run_driver"]["trial_gpu_s"] * speedup


def p5(peak: Optional[dict], p1: dict) -> dict:
    """P5 from the first trial's peak (None off CUDA) and the concurrent workers' own peaks."""
    if not peak:
        return {"max_memory_allocated_gib": None, "max_memory_reserved_gib": None,
                "note": "no CUDA device: GPU memory not measured"}
    out = {**peak, "what": "one ResNet-18 SCRUB trial (P2, first repeat), its workspace's data resident; "
                           "excludes the CUDA context (~0.5 GiB)"}
    conc_mem = [v.get("max_memory_allocated_gib_per_process") for c in p1.get("concurrency", {}).values()
                for v in c.get("levels", {}).values() if isinstance(v, dict)]
    conc_mem = [m for m in conc_mem if m is not None]
    if conc_mem:
        out["concurrency_worker_max_allocated_gib"] = max(conc_mem)
    return out
