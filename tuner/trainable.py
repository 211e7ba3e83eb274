"""The Ray Tune trainable: one unlearning trial, reported and checkpointed every epoch.

Thin on purpose (Ray Tune examples style): it rebuilds the experiment's workspace from the artifact store
(originals and retrains were built by the prepare stage), runs the algorithm one epoch at a time through
`unlearn_core`, and reports one flat dict per epoch with a checkpoint in the same call. A retried or restored
trial resumes from `tune.get_checkpoint()`. A diverging run ends as a finished trial with `pruned = 1`,
its reason in `prune_reason` and ToW/ToW-MIA of 0 — never an ERROR that would cost the search a trial slot.
"""
from __future__ import annotations

import os
import tempfile
import time
from typing import Optional

import ray
import torch
from ray import tune

from search_spaces import to_config_params
from unlearn_core.data import Dataset
from unlearn_core.errors import LossDiverged
from unlearn_core.experiment import ExperimentSpec, Workspace, score
from unlearn_core.unlearning import create_unlearner, make_config

REPORT_KEYS = ("epoch", "tow", "tow_mia", "forget_acc", "retain_acc", "val_acc", "test_acc", "mia",
               "unlearn_seconds", "final", "pruned", "node_id")


def _threads(cpus: float) -> None:
    # One trial per CPU slot: more torch threads than the slot oversubscribes the node (2 threads on a busy
    # 2-core box measured ~40× slower than 1).
    torch.set_num_threads(max(1, int(cpus)))


def run_trial(config: dict, dataset: Optional[Dataset] = None) -> None:
    """Trainable for `tune.with_parameters(run_trial, dataset=...)`; config = space params + `spec`, `space`."""
    _threads(config.get("cpus_per_trial", 1))
    spec = ExperimentSpec(**{**config["spec"], "forget_classes": tuple(config["spec"].get("forget_classes", (0,)))})
    algorithm = config["algorithm"]
    params = to_config_params(config["space"], config)
    if algorithm == "rum" or int(config.get("steps", 1)) > 1:
        from .sequential_trial import run_sequential_trial  # one report per deletion request

        return run_sequential_trial(config, spec, params, dataset)
    cfg = make_config(algorithm, params)
    ws = Workspace(spec, dataset)
    original, _ = ws.original()
    forget_ids = ws.select_forget()
    forget, retain = ws.sets(forget_ids)
    ref = ws.retrain_metrics(forget_ids)
    unl = create_unlearner(algorithm, original, forget, retain, cfg, seed=spec.seed,
                           pad=ws.data.crop_pad, flip=ws.data.flip)
    seconds = 0.0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(os.path.join(d, "state.pt"), weights_only=True, map_location=ws.device)
        unl.load_state_dict(state)
        seconds = float(state["seconds"])
    while unl.epoch < cfg.epochs:
        t0 = time.perf_counter()
        try:
            unl.step()
        except LossDiverged as err:
            tune.report({**pruned_metrics(unl.epoch + 1, err, seconds + time.perf_counter() - t0),
                         "node_id": ray.get_runtime_context().get_node_id()})
            return
        seconds += time.perf_counter() - t0
        metrics = {**score(ws.evaluate(unl.model, forget_ids), ref), "epoch": unl.epoch,
                   "unlearn_seconds": seconds, "final": int(unl.epoch == cfg.epochs), "pruned": 0,
                   "prune_reason": "", "node_id": ray.get_runtime_context().get_node_id()}
        with tempfile.TemporaryDirectory() as d:
            torch.save({**unl.state_dict(), "seconds": seconds}, os.path.join(d, "state.pt"))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def pruned_metrics(epoch: int, err: LossDiverged, seconds: float) -> dict:
    """The report of a diverged trial: worst objective values (finite, so Optuna records them), reason kept."""
    return {"epoch": epoch, "tow": 0.0, "tow_mia": 0.0, "forget_acc": float("nan"), "retain_acc": float("nan"),
            "val_acc": float("nan"), "test_acc": float("nan"), "mia": float("nan"), "unlearn_seconds": seconds,
            "final": 1, "pruned": 1, "prune_reason": str(err)}
