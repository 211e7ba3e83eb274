"""Trials that run several deletion requests (`--steps K`) or RUM: one report per request.

`unlearn_core.sequential.run_sequential` drives the requests; each finished request is reported with its
ToW / ToW-MIA (the mean over the requests so far, which is what the search optimizes: the paper scores
sequential unlearning by all five requests) and its own metrics. A request's retrain is cached in the
artifact store, so a retried trial re-runs its requests without retraining anything.
"""
from __future__ import annotations

import time

import ray
from ray import tune

from unlearn_core.experiment import METRIC_KEYS, Workspace
from unlearn_core.sequential import run_sequential


def run_sequential_trial(config: dict, spec, params: dict, dataset) -> None:
    steps = int(config.get("steps", 1))
    ws = Workspace(spec, dataset)
    tows, tow_mias, seconds = [], [], [0.0]
    start = time.time()

    def on_request(req) -> None:
        rec = req.record
        seconds[0] += rec["unlearn_seconds"]
        diverged = rec.get("diverged")
        tows.append(rec["tow"] if rec["tow"] is not None else 0.0)
        tow_mias.append(rec["tow_mia"] if rec["tow_mia"] is not None else 0.0)
        last = diverged is not None or req.index + 1 == steps
        tune.report({
            "epoch": req.index + 1, "request": req.index + 1,
            "tow": sum(tows) / len(tows), "tow_mia": sum(tow_mias) / len(tow_mias),
            "request_tow": tows[-1], "request_tow_mia": tow_mias[-1],
            **{k: (rec[k] if rec[k] is not None else float("nan")) for k in METRIC_KEYS},
            "unlearn_seconds": seconds[0], "final": int(last), "pruned": int(diverged is not None),
            "prune_reason": "" if diverged is None else f"diverged in request {req.index + 1}: {diverged.get('reason')}",
            "trial_start": start, "node_id": ray.get_runtime_context().get_node_id(),
        })

    run_sequential(spec, config["algorithm"], params, steps=steps, workspace=ws, on_request=on_request)
