"""Result files of a search: the trial table and the best-configs table (markdown)."""
from __future__ import annotations

import json

import pandas as pd

TRIAL_COLUMNS = ("dataset", "arch", "trial_id", "status", "prune_reason", "epoch", "request", "tow", "tow_mia", "forget_acc",
                 "retain_acc", "val_acc", "test_acc", "mia", "unlearn_seconds", "time_total_s", "node_id", "params")


def trials_table(rows: list[dict]) -> pd.DataFrame:
    """Every trial: its config, last metrics, status (completed / stopped by ASHA / pruned / error), reason."""
    return pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))


def _ci(x: dict) -> str:
    return f"{x['mean']:.4f} [{x['low']:.4f}, {x['high']:.4f}]"


def _short(params: dict) -> str:
    skip = {"momentum", "weight_decay", "augment"}
    if "plan" in params:
        return " → ".join(f"{s['algorithm']}" + (f"({', '.join(f'{k}={v:.3g}' if isinstance(v, float) else f'{k}={v}' for k, v in s['params'].items() if k not in skip)})" if s["params"] else "")
                          for s in params["plan"])
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items() if k not in skip)


def best_configs_markdown(summary: list[dict]) -> str:
    """One row per dataset × arch: the winner and the paper's config, ToW / ToW-MIA with 95 % intervals."""
    lines = ["| dataset | arch | config | ToW (95 % CI) | ToW-MIA (95 % CI) | seeds | trials (done/ASHA/pruned/err) | params |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        t = s["trials"]
        counts = f"{t['completed']}/{t['stopped']}/{t['pruned']}/{t['error']}"
        lines.append(f"| {s['dataset']} | {s['arch']} | **best** ({s['label']}) | {_ci(s['tow'])} | {_ci(s['tow_mia'])} "
                     f"| {len(s['seeds'])} | {counts} | {_short(s['params'])} |")
        p = s["paper"]
        lines.append(f"| {s['dataset']} | {s['arch']} | paper | {_ci(p['tow'])} | {_ci(p['tow_mia'])} "
                     f"| {len(p['seeds'])} |  | {_short(p['params'])} |")
    return "\n".join(lines) + "\n"


def pareto_front(rows: list[dict], keys=("tow", "tow_mia")) -> list[dict]:
    """Rows not dominated in `keys` (all maximized), by Optuna's own multi-objective front (`best_trials`)."""
    import math

    import optuna

    quiet = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line for this scratch study
    try:
        study = optuna.create_study(directions=["maximize"] * len(keys))
    finally:
        optuna.logging.set_verbosity(quiet)
    for i, r in enumerate(rows):
        values = [r[k] for k in keys]
        if all(v is not None and math.isfinite(v) for v in values):
            study.add_trial(optuna.trial.create_trial(values=values, user_attrs={"row": i}))
    if not study.trials:
        return []
    return [rows[t.user_attrs["row"]] for t in sorted(study.best_trials, key=lambda t: t.user_attrs["row"])]
