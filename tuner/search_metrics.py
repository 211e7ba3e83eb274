"""A search's progress as Prometheus metrics, on Ray's own metrics pipeline (`ray.util.metrics`).

A Tune callback on the driver records three gauges per (dataset, arch). Ray exports them, prefixed `ray_`,
from the metrics endpoint of the driver's node (`ray start --metrics-export-port`), beside Ray's own metrics, so
the Prometheus that `ray metrics launch-prometheus` starts scrapes them with no extra configuration:

    ray_unlearn_search_trials{experiment, dataset, arch, status}    running, completed, stopped, diverged, error
    ray_unlearn_search_best_objective{experiment, dataset, arch, objective}  best final sel_tow / sel_tow_mia
    ray_unlearn_search_epochs_per_second{experiment, dataset, arch}  epochs per second, running trials together

`experiment` is the search's --name, so one Prometheus tells apart searches that run on one cluster at once.

Counts are states, not events: a resumed search counts the trials that had ended before it was interrupted.
The best objective is over trials that ran their whole schedule (their `final_sel_*`, what Optuna is told); a
trial stopped by ASHA has none. A trial's rate is epochs over time between its last two reports (its first
report may be a restored one). The gauges go with the driver: a finished search leaves them on the endpoint
until its driver exits, and in Prometheus as the last scrape before: a search that joined a cluster waits
`export_wait()` before it exits, so its final counts are exported and scraped (Ray exports every
RAY_metrics_report_interval_ms, 10 s by default; the Prometheus of `ray metrics launch-prometheus` scrapes
every 10 s).

    run_config=tune.RunConfig(callbacks=[SearchMetrics("c10-scrub", "digits", "resnet18")], ...)
"""
from __future__ import annotations

import functools
import math
import os
import time

from ray import tune

from .trial_schema import ENDED, trial_status

OBJECTIVES = ("sel_tow", "sel_tow_mia")
_LAST_SET = [0.0]  # time.monotonic() of this process's last gauge update


def export_wait() -> float:
    """Seconds until this process's last gauge values have been exported and scraped: two of Ray's metrics
    report intervals after the last update (one to export, one for the scrape), none where nothing was set.

        time.sleep(export_wait())  # before a driver that joined a cluster exits
    """
    if not _LAST_SET[0]:
        return 0.0
    interval = float(os.environ.get("RAY_metrics_report_interval_ms", "10000")) / 1000
    return max(0.0, _LAST_SET[0] + 2 * interval - time.monotonic())


@functools.cache
def gauges() -> dict:
    """The metric objects, made once per process (Ray registers a metric by name) and only where used: the
    callback is pickled with the Tuner's state, metric objects are not."""
    from ray.util.metrics import Gauge

    return {
        "trials": Gauge("unlearn_search_trials", "Trials of a search: running, or how they ended (completed, "
                        "stopped by ASHA, diverged, error)", tag_keys=("experiment", "dataset", "arch", "status")),
        "best": Gauge("unlearn_search_best_objective", "Best final selection objective (validation ToW or "
                      "ToW-MIA) among the trials that ran their whole schedule",
                      tag_keys=("experiment", "dataset", "arch", "objective")),
        "rate": Gauge("unlearn_search_epochs_per_second", "Unlearning epochs per second of the running trials "
                      "together", tag_keys=("experiment", "dataset", "arch")),
    }


class SearchMetrics(tune.Callback):
    """Records the gauges of one (dataset, arch)'s Tuner from Tune's trial events."""

    def __init__(self, experiment: str, dataset: str, arch: str):
        self.tags = {"experiment": experiment, "dataset": dataset, "arch": arch}
        self._forget()

    def _forget(self) -> None:
        self.ended: dict[str, str] = {}   # trial id -> status
        self.last: dict[str, tuple] = {}  # trial id -> (epoch, time_total_s) of its last report
        self.rates: dict[str, float] = {}  # trial id -> epochs per second
        self.best: dict[str, float] = {}
        self.started = False

    def __getstate__(self):
        # A restored Tuner runs the unpickled copy: it starts from the trials Tune restores (on_step_begin).
        return {"tags": self.tags}

    def __setstate__(self, state):
        self.tags = state["tags"]
        self._forget()

    # --- Tune's events -----------------------------------------------------------------------------------------
    def on_step_begin(self, iteration, trials, **info):
        if not self.started:  # a restored experiment: its trials that had ended before the interrupt
            self.started = True
            for t in trials:
                if t.status in ("TERMINATED", "ERROR"):
                    self._ended(t, t.status == "ERROR")
            self._publish(trials)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._publish(trials)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        epoch, seconds = result.get("epoch"), result.get("time_total_s")
        if epoch is None or seconds is None:
            return
        before = self.last.get(trial.trial_id)
        self.last[trial.trial_id] = (epoch, seconds)
        if before is not None and seconds > before[1] and epoch >= before[0]:
            self.rates[trial.trial_id] = (epoch - before[0]) / (seconds - before[1])
        else:  # its first report, or a restart (Tune's clock began again): no rate until the next one
            self.rates.pop(trial.trial_id, None)
        self._publish(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trial, errored=False)
        self._publish(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial, errored=True)
        self._publish(trials)

    def on_experiment_end(self, trials, **info):
        self.rates.clear()
        self._publish(trials, running=0)

    # --- what is recorded --------------------------------------------------------------------------------------
    def _ended(self, trial, errored: bool) -> None:
        result = trial.last_result or {}
        self.ended[trial.trial_id] = trial_status(result, errored, interrupted=False)
        self.rates.pop(trial.trial_id, None)
        self.last.pop(trial.trial_id, None)
        for k in OBJECTIVES:
            v = result.get(f"final_{k}")
            if isinstance(v, (int, float)) and not math.isnan(v):
                self.best[k] = max(self.best.get(k, -math.inf), float(v))

    def _publish(self, trials, running=None) -> None:
        g = gauges()
        if running is None:
            running = sum(1 for t in trials if t.status == "RUNNING" and t.trial_id not in self.ended)
        counts = {"running": running, **{s: 0 for s in ENDED}}
        for status in self.ended.values():
            counts[status] += 1
        for status, n in counts.items():
            g["trials"].set(n, tags={**self.tags, "status": status})
        for k, v in self.best.items():
            g["best"].set(v, tags={**self.tags, "objective": k})
        g["rate"].set(sum(self.rates.values()), tags=self.tags)
        _LAST_SET[0] = time.monotonic()
