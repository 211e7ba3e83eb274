"""One trial's schema, written once: what a trial reports to Tune, and the trials.csv row the search keeps of it.

A trial reads the selection view only (validation data): `sel_*` keys, never a test-set one. A trial whose loss
diverged is a finished trial with `diverged = 1`, its reason in `reason`, and objectives of 0; Optuna's PRUNED
state means only "stopped by ASHA".

    row = trial_row("digits", "resnet18", "a1b2c3", "completed", {"sel_tow": 0.97}, error=None, params="{}")
    assert list(row) == list(COLUMNS) and row["reason"] == ""
"""
from __future__ import annotations

from typing import Optional

# Keys of the run driver's row that a trial reports as they are (tuner/trainable.py).
RUN_KEYS = ("progress", "epoch", "request", "sel_tow", "sel_tow_mia", "request_sel_tow", "request_sel_tow_mia",
            "forget_acc", "retain_acc", "val_acc", "sel_mia", "unlearn_seconds", "final")
# What Optuna is told: NaN until the run's last row, so a trial ASHA stops never reaches the sampler early.
OPTUNA_KEYS = ("final_sel_tow", "final_sel_tow_mia")

# trials.csv: one row per trial; these columns hold its last report (time_total_s is Tune's own metric,
# node_id, diverged's reason the trial's).
LAST_REPORT = ("progress", "epoch", "request", "sel_tow", "sel_tow_mia", "forget_acc", "retain_acc", "val_acc",
               "sel_mia", "unlearn_seconds", "time_total_s", "node_id")
COLUMNS = ("dataset", "arch", "trial_id", "status", "reason", *LAST_REPORT, "params")

# A trial's status once its search ended; `unfinished` only while a search is interrupted (--resume finishes it).
ENDED = ("completed", "stopped", "diverged", "error")
STATUSES = (*ENDED, "unfinished")


def trial_metrics(row: dict, node_id: str) -> dict:
    """The report of one run-driver row: its RUN_KEYS, `diverged` (0/1) with its `reason`, the node, and
    OPTUNA_KEYS (NaN unless the row is the run's last)."""
    return {**{k: row[k] for k in RUN_KEYS if k in row},
            "diverged": int(bool(row["diverged"])), "reason": row["diverged"], "node_id": node_id,
            **{f"final_{k}": row[k] if row["final"] else float("nan") for k in ("sel_tow", "sel_tow_mia")}}


def trial_status(metrics: dict, errored: bool, interrupted: bool) -> str:
    """error / diverged / completed (ran its last epoch) / stopped (by ASHA) / unfinished (the search was
    interrupted before it ended; --resume finishes it)."""
    if errored:
        return "error"
    if metrics.get("diverged"):
        return "diverged"
    if metrics.get("final"):
        return "completed"
    return "unfinished" if interrupted else "stopped"


def trial_row(dataset: str, arch: str, trial_id: str, status: str, metrics: dict, error: Optional[str],
              params: str) -> dict:
    """The trials.csv row of a trial: its last report's metrics; `reason` is why it diverged or failed."""
    return {"dataset": dataset, "arch": arch, "trial_id": trial_id, "status": status,
            "reason": metrics.get("reason", "") or (error or "")[:200],
            **{k: metrics.get(k) for k in LAST_REPORT}, "params": params}
