"""Result files of a search: the trial table and the best-configs table (markdown)."""
from __future__ import annotations

import pandas as pd

# A trial reads only the selection view (validation data): sel_* columns; no test-set column exists here.
TRIAL_COLUMNS = ("dataset", "arch", "trial_id", "status", "prune_reason", "progress", "epoch", "request", "sel_tow",
                 "sel_tow_mia", "forget_acc", "retain_acc", "val_acc", "sel_mia", "unlearn_seconds", "time_total_s",
                 "node_id", "params")


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


def _diff(x: dict) -> str:
    return f"{x['mean']:+.4f} [{x['low']:+.4f}, {x['high']:+.4f}]"


def best_configs_markdown(summary: list[dict]) -> str:
    """Per dataset × arch: the recommended config and the paper's on the same fresh seeds — the selection
    objective that chose (validation only), the report ToW / ToW-MIA (test set) with 95 % intervals — and the
    paired difference searched − paper. When no searched config beats the paper's, it says so and recommends
    the paper's config."""
    lines = ["| dataset | arch | config | selection objective (val, 95 % CI) | ToW (test, 95 % CI) | "
             "ToW-MIA (test, 95 % CI) | seeds | diverged | params |", "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for s in summary:
        p = s["paper"]
        others = [c for c in s["candidates"] if c["label"] != "paper"]
        first = next((c for c in s["candidates"] if c["label"] == s["label"]), p)
        rows = [("**recommended**: " + first["label"] if s["beats_paper"] else
                 "**recommended: the paper's config** (no searched config had both a higher lower bound and a "
                 "higher mean)", first)]
        if s["beats_paper"]:
            rows.append(("paper", p))
        elif others:
            rows.append((f"best searched ({others[0]['label']}), not better", others[0]))
        for label, c in rows:
            lines.append(f"| {s['dataset']} | {s['arch']} | {label} | {_ci(c['objective'])} | {_ci(c['tow'])} | "
                         f"{_ci(c['tow_mia'])} | {' '.join(map(str, c['seeds']))} | {c['diverged_runs']} | "
                         f"{_short(c['params'])} |")
        if s.get("difference"):
            d = s["difference"]
            lines.append(f"| {s['dataset']} | {s['arch']} | {s['compared']} − paper (paired, same seeds) |  | "
                         f"{_diff(d['tow'])} | {_diff(d['tow_mia'])} | {' '.join(map(str, p['seeds']))} |  |  |")
        t = s["trials"]
        notes.append(f"{s['dataset']}/{s['arch']}: search seed {s['search_seed']}; {s['trials_run']} trials "
                     f"({t['completed']} completed, {t['stopped']} stopped by ASHA, {t['pruned']} diverged, "
                     f"{t['error']} errors); finals on seeds {', '.join(map(str, p['seeds']))} (never the search "
                     f"seed); objective {s['objective_name']}.")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


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
