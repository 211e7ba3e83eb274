"""The artifacts a study needs besides unlearning: training epochs, an original and a retrain, the store.

Seconds per training epoch of both archs at CIFAR-10's and CIFAR-100's batch (P3 prices every original and
retrain with them). With `with_training`, the trial workspace's original and its retrain without the forget
set are built the way every run builds them — `references.original(ws)` and `references.retrain(ws, ids)`,
which train, record learning events and save to the workspace's store — so P2 can then drive a whole `Run`
that finds them there; otherwise they are estimated as epoch time × epochs. Last, save + load of a ResNet-18
state through `ArtifactStore`, as the prepare stage and every trial do.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np

from unlearn_core.artifacts import artifact_key
from unlearn_core.training import train

from benchmarks.timing import Timer, mean_of, summary, sync
from benchmarks.workload import ARCHS, new_model, warm_size


def measure_artifacts(ws, forget_ids: np.ndarray, hyp: dict, *, with_training: bool, seed: int = 0) -> dict:
    """Training cost per epoch, an original + a retrain (built into ws.store with `with_training`, else
    estimated), and save + load through the store. `ws` is the trial workspace (workload.trial_workspace)."""
    from unlearn_core import references

    run, device = hyp["run"], ws.device
    orig_set = ws.train                       # the paper's train split: 45k (CIFAR)
    n_orig = len(orig_set)
    n_retrain = n_orig - len(forget_ids)
    epoch = {}
    for arch in ARCHS:
        for key in ("batch", "batch_c100"):
            bs = run[key]
            model = new_model(arch, hyp, device, seed)
            warm = orig_set.subset(np.arange(warm_size(n_orig, bs, 4)))
            cfg = dataclasses.replace(ws.recipe, epochs=1, batch_size=bs)
            train(model, warm, cfg, seed=seed, pad=ws.data.crop_pad, flip=ws.data.flip)
            secs = []
            for r in range(run["train_repeats"]):
                with Timer(device) as t:
                    train(model, orig_set, cfg, seed=seed + r, pad=ws.data.crop_pad, flip=ws.data.flip)
                secs.append(t.seconds)
            epoch[f"{arch}/bs{bs}"] = {"epoch_s": summary(secs), "img_s": summary(n_orig / s for s in secs),
                                       "images": n_orig, "batch": bs, "arch": arch, "role": key}
            del model
    e = ws.recipe.epochs
    r18 = mean_of(epoch[f"resnet18/bs{run['batch']}"]["epoch_s"])
    out: dict[str, Any] = {"train_epoch": epoch, "recipe_epochs": e, "recipe_batch": ws.recipe.batch_size}
    if with_training:
        with Timer(device) as t:
            _, art = references.original(ws)
        with Timer(device) as t2:
            _, art2 = references.retrain(ws, forget_ids)
        how = "measured (references.original: train + learning events + store)"
        out["original_s"] = {"value": t.seconds, "kind": how, "train_s": float(art["seconds"]), "images": n_orig}
        out["retrain_s"] = {"value": t2.seconds, "kind": "measured (references.retrain: train + store)",
                            "train_s": float(art2["seconds"]), "images": n_retrain}
    else:
        how = "estimated (epoch time × epochs)"
        out["original_s"] = {"value": r18 * e, "kind": how, "images": n_orig}
        out["retrain_s"] = {"value": r18 * e * n_retrain / n_orig, "kind": how, "images": n_retrain}
    out["store"] = measure_store(ws, hyp, run["io_repeats"], seed)
    return out


def measure_store(ws, hyp: dict, repeats: int, seed: int) -> dict:
    """Save + load of one ResNet-18 state through the workspace's `ArtifactStore` (a local temporary folder)."""
    store, device = ws.store, ws.device
    model = new_model("resnet18", hyp, device, seed)
    saves, loads = [], []
    for r in range(repeats):
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
    return {"save_s": summary(saves), "load_s": summary(loads),
            "bytes": os.path.getsize(store.path("original", artifact_key("benchmark", repeat=0))),
            "root": "local temporary folder"}


def train_img_s(artifacts: dict) -> dict:
    """(arch, dataset) → training img/s at that dataset's batch (CIFAR-10: `batch`, CIFAR-100: `batch_c100`),
    as study_cost.UnitCosts wants it."""
    by_role = {"batch": "cifar10", "batch_c100": "cifar100"}
    return {(v["arch"], by_role[v["role"]]): mean_of(v["img_s"]) for v in artifacts["train_epoch"].values()}
