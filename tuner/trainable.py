"""The Ray Tune trainable: one trial = one run of the run driver, reported at each comparable evaluation.

Thin on purpose (Ray Tune examples style): restore the run's saved state if there is one, then report the rows
the search may judge. What a trial reads is the *selection* view only (validation accuracy and a validation-
based MIA, `sel_tow` / `sel_tow_mia`): it never evaluates the test split, which is kept for the report.

Early stopping judges like with like: ASHA's clock is `progress` (percent of the trial's own schedule), and a
row is reported only when its unlearner is `settled` — SCRUB after its max phase, RUM and sequential runs at
request ends — so a paper-shaped SCRUB run is never compared while it is still forgetting. Optuna is told
`final_sel_*`: NaN until the run's last row, so a trial ASHA stops never reaches the sampler with early values
(the service marks it PRUNED). A diverging run ends as a finished trial with `diverged = 1`, its reason in
`reason` and objectives of 0 — never an ERROR that would cost the search a trial slot. What a trial reports is
`tuner.trial_schema`'s.
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

from .trial_schema import trial_metrics
from .trial_state import TrialState


class Evaluations:
    """Which epochs a trial evaluates: settled ones (accuracies), with the SVC MIA only at the first settled
    row past each ASHA rung when ASHA ranks by ToW-MIA; several requests or RUM: request ends only."""

    def __init__(self, rungs, mia_at_rungs: bool, last_progress: float = 0.0, per_epoch: bool = True):
        self.rungs, self.mia_at_rungs, self.last, self.per_epoch = tuple(rungs), mia_at_rungs, last_progress, per_epoch

    def __call__(self, row: dict) -> str:
        if not self.per_epoch or not row["settled"]:
            return ""
        crossed = any(self.last < m <= row["progress"] for m in self.rungs)
        self.last = row["progress"]
        return "all" if crossed and self.mia_at_rungs else "acc"


def run_trial(config: dict, dataset: Optional[Dataset] = None) -> None:
    """Trainable for `tune.with_parameters(run_trial, dataset=...)`; config = space params + `spec` and the run's
    settings (`algorithm`, `space`, `requests`, `ranking_model`, `cpus_per_trial`, `state_dir`, `rungs`,
    `mia_at_rungs`)."""
    use_cpus(config["cpus_per_trial"])
    spec = ExperimentSpec(**config["spec"])
    requests, algorithm = int(config["requests"]), config["algorithm"]
    state = TrialState(config["state_dir"], tune.get_context().get_trial_id())
    saved = state.load()
    if saved is not None:
        # The state is saved before its report, so that report may never have reached the (killed) driver, and
        # the snapshot a search resumes from may predate it: give it again (seen twice at worst, never lost).
        tune.report(saved["row"])
        if saved["run"] is None:  # it had finished
            return
    policy = Evaluations(config["rungs"], config["mia_at_rungs"], per_epoch=requests == 1 and algorithm != "rum",
                         last_progress=saved["row"]["progress"] if saved else 0.0)
    run = start(spec, algorithm, to_config_params(config["space"], config), Workspace(spec, dataset),
                requests=requests, ranking_model=config["ranking_model"], views=("selection",), evaluate=policy)
    if saved is not None:
        run.load_state_dict(saved["run"])
    node = ray.get_runtime_context().get_node_id()
    for row in run.epochs():
        if "sel_tow" not in row:
            continue
        metrics = trial_metrics(row, node)
        state.save(None if run.done else run.state_dict(), metrics)  # before the report that needs it
        tune.report(metrics)
