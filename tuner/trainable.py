"""The Ray Tune trainable: one trial = one run of the run driver, reported after every evaluated epoch.

Thin on purpose (Ray Tune examples style): restore the run's saved state if there is one, then report every
row that carries metrics. The run driver (`unlearn_core.run`) does the protocol; `TrialState` keeps the latest
state so that a retried or resumed trial continues where it stopped. A diverging run ends as a finished trial
with `pruned = 1`, its reason in `prune_reason` and ToW/ToW-MIA of 0 — never an ERROR that would cost the
search a trial slot.
"""
from __future__ import annotations

from typing import Optional

import ray
from ray import tune

from search_spaces import to_config_params
from unlearn_core.data import Dataset
from unlearn_core.environment import use_cpus
from unlearn_core.run import start
from unlearn_core.spec import ExperimentSpec
from unlearn_core.workspace import Workspace

from .trial_state import TrialState

REPORT_KEYS = ("evaluation", "epoch", "request", "tow", "tow_mia", "request_tow", "request_tow_mia", "forget_acc",
               "retain_acc", "val_acc", "test_acc", "mia", "unlearn_seconds", "final", "pruned", "prune_reason")


def run_trial(config: dict, dataset: Optional[Dataset] = None) -> None:
    """Trainable for `tune.with_parameters(run_trial, dataset=...)`; config = space params + `spec` and the run's
    settings (`algorithm`, `space`, `requests`, `selection`, `cpus_per_trial`, `state_dir`)."""
    use_cpus(config["cpus_per_trial"])
    spec = ExperimentSpec(**config["spec"])
    requests, algorithm = int(config["requests"]), config["algorithm"]
    run = start(spec, algorithm, to_config_params(config["space"], config), Workspace(spec, dataset),
                requests=requests, selection=config["selection"],
                # one request: metrics every epoch (ASHA's rungs); several: at each request's end
                evaluate_every_epoch=requests == 1 and algorithm != "rum",
                # the SVC MIA only where something reads it: the rungs of an ASHA ranking by ToW-MIA, and the end
                mia_at=set(config.get("mia_evaluations", ())).__contains__)
    state = TrialState(config["state_dir"], tune.get_context().get_trial_id())
    saved, reports = state.load(), 0
    if saved is not None:
        if saved["run"] is None:  # it had finished: report its last row again (the snapshot may predate it)
            tune.report(saved["row"])
            return
        run.load_state_dict(saved["run"])
        reports = int(saved["reports"])
    node = ray.get_runtime_context().get_node_id()
    for row in run.epochs():
        if "tow" not in row:
            continue
        reports += 1
        metrics = {**{k: row[k] for k in REPORT_KEYS if k in row}, "evaluation": reports,
                   "pruned": int(bool(row["diverged"])), "prune_reason": row["diverged"], "node_id": node,
                   # what Optuna is told: the values of a run that reached its end; NaN before (an ASHA-stopped
                   # trial never reaches the sampler with early values; the service marks it PRUNED)
                   **{f"final_{k}": row[k] if row["final"] else float("nan") for k in ("tow", "tow_mia")}}
        state.save(None if run.done else run.state_dict(), metrics, reports)  # before the report that needs it
        tune.report(metrics)
