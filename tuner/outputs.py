"""Result files of a search: trials.csv, best_configs.{json,md,csv} and pareto_front.csv.

    write_outputs(settings, summary)   # summary: one `final_runs.finalize_pair` dict per (dataset, arch)
"""
from __future__ import annotations

import json

import pandas as pd

from .files import write_json, write_text
from .trial_schema import COLUMNS


def trials_table(rows: list[dict]) -> pd.DataFrame:
    """Every trial (`trial_schema.COLUMNS`): its config, last metrics, status (completed / stopped by ASHA /
    diverged / error / unfinished) and reason. A trial reads only the selection view: no test-set column."""
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write_outputs(s, summary: list[dict]) -> None:
    """best_configs.json (per-seed records stay in the final runs' store), .md and .csv, and pareto_front.csv
    under the experiment folder of settings `s`."""
    clean = [{**x, "paper": {k: v for k, v in x["paper"].items() if k != "runs"}} for x in summary]
    write_json(f"{s.exp_dir}/best_configs.json", clean, indent=1)
    write_text(f"{s.exp_dir}/best_configs.md", best_configs_markdown(summary))
    flat = [{"dataset": x["dataset"], "arch": x["arch"], "algorithm": x["algorithm"], "objective": x["objective_name"],
             "recommended": x["label"], "beats_paper": x["beats_paper"],
             **{f"{k}{suffix}": x[k][stat] for k in ("sel_tow", "sel_tow_mia", "tow", "tow_mia")
                for suffix, stat in (("", "mean"), ("_low", "low"), ("_high", "high"))},
             "seeds": " ".join(map(str, x["seeds"])), "search_seed": x["search_seed"],
             "diverged_runs": x["diverged_runs"], "params": json.dumps(x["params"])} for x in summary]
    write_text(f"{s.exp_dir}/best_configs.csv", pd.DataFrame(flat).to_csv(index=False))
    fronts = [{"dataset": x["dataset"], "arch": x["arch"], **p} for x in summary for p in x["pareto_front"]]
    write_text(f"{s.exp_dir}/pareto_front.csv", pd.DataFrame(fronts).to_csv(index=False))


def _ci(x: dict) -> str:
    return f"{x['mean']:.4f} [{x['low']:.4f}, {x['high']:.4f}]"


def _short(params: dict) -> str:
    """'lr=0.01, epochs=5', or a RUM plan's stages 'none → finetune(lr=0.1, epochs=5) → ...' (SGD's constants
    left out)."""
    skip = {"momentum", "weight_decay", "augment"}

    def pairs(p: dict) -> str:
        return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items() if k not in skip)

    if "plan" in params:
        return " → ".join(s["algorithm"] + (f"({pairs(s['params'])})" if s["params"] else "") for s in params["plan"])
    return pairs(params)


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
                     f"({t['completed']} completed, {t['stopped']} stopped by ASHA, {t['diverged']} diverged, "
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
