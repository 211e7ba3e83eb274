"""`python -m tuner.report EXPERIMENT_DIR`: figures (PNG) and a markdown summary of a search or a study.

A search folder (has `search.json`) gets: optimization history and hyperparameter importances per objective
(Optuna's own plots), the Pareto front of ToW vs ToW-MIA and of ToW vs GPU-seconds, and the best-config table
with the paper's config beside. A study folder (has `study.json`) gets the paper's figures: ToW and ToW-MIA per
sequential request, one line per method with 95 % interval bars, and test / retain / forget accuracy per
request against the retrained model, plus a table with one-shot vs sequential rows and the speed-up over
retraining.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from typing import Optional, Sequence

from unlearn_core.errors import ConfigError, UnlearnError


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def kind_of(exp_dir: str) -> str:
    if not os.path.isdir(exp_dir):
        raise ConfigError(f"experiment folder {exp_dir} does not exist")
    if os.path.exists(os.path.join(exp_dir, "search.json")):
        return "search"
    if os.path.exists(os.path.join(exp_dir, "study.json")):
        return "study"
    raise ConfigError(f"{exp_dir} is neither a search (no search.json) nor a study (no study.json)")


# --- search -----------------------------------------------------------------------------------------------

def report_search(exp_dir: str) -> str:
    import optuna
    import pandas as pd

    from . import figures
    from .outputs import best_configs_markdown, pareto_front
    from .study_storage import open_storage, study_name

    meta = _read_json(os.path.join(exp_dir, "search.json"))
    best_path = os.path.join(exp_dir, "best_configs.json")
    best = _read_json(best_path) if os.path.exists(best_path) else []
    trials_csv = os.path.join(exp_dir, "trials.csv")
    trials = pd.read_csv(trials_csv) if os.path.exists(trials_csv) else pd.DataFrame()
    fig_dir = os.path.join(exp_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    gpus = float(meta.get("resources", {}).get("gpus_per_trial") or 0)
    sec_label = "GPU-seconds per trial" if gpus else "trial seconds (CPU)"
    settings = meta["settings"]
    alg = settings["algorithm"]
    lines = [f"# Search report: {alg} ({os.path.basename(exp_dir)})", "",
             f"Objective: {settings['objective']}; device: {meta.get('env', {}).get('device', '?')}; "
             f"torch {meta.get('env', {}).get('torch', '?')}.", ""]
    for dataset, arch in [(d, a) for d in settings["datasets"] for a in settings["archs"]]:
        tag = f"{dataset}-{arch}"
        lines += [f"## {dataset} / {arch}", ""]
        study = optuna.load_study(study_name=study_name(os.path.basename(exp_dir.rstrip("/")), dataset, arch),
                                  storage=open_storage(settings["optuna_url"]))
        # the study holds the selection view (validation data) of each trial that ran its whole schedule
        names = (["selection ToW", "selection ToW-MIA"] if len(study.directions) == 2
                 else [("selection ToW-MIA" if settings["objective"] == "tow_mia" else "selection ToW")])
        made = []
        for i, name in enumerate(names):
            idx = i if len(names) == 2 else None
            slug = name.split()[-1].lower().replace("-", "_")
            made.append(figures.optuna_figure("history", study, target_index=idx, target_name=name,
                                              title=f"{alg} on {dataset}/{arch}: {name} per trial",
                                              path=os.path.join(fig_dir, f"{tag}-history-{slug}.png")))
            made.append(figures.optuna_figure("importance", study, target_index=idx, target_name=name,
                                              title=f"{alg} on {dataset}/{arch}: importance for {name}",
                                              path=os.path.join(fig_dir, f"{tag}-importance-{slug}.png")))
        done = trials[(trials.get("dataset") == dataset) & (trials.get("arch") == arch) &
                      (trials.get("status") == "completed")] if len(trials) else trials
        pts = [{"tow": float(r.sel_tow), "tow_mia": float(r.sel_tow_mia),
                "seconds": float(r.time_total_s) * (gpus or 1.0), "neg_seconds": -float(r.time_total_s) * (gpus or 1.0)}
               for r in done.itertuples()]
        if pts:
            made.append(figures.pareto(pts, pareto_front(pts), x="tow", y="tow_mia", xlabel="selection ToW (val)",
                                       ylabel="selection ToW-MIA (val)",
                                       title=f"{alg} on {dataset}/{arch}: ToW vs ToW-MIA",
                                       path=os.path.join(fig_dir, f"{tag}-pareto-tow-vs-tow_mia.png")))
            made.append(figures.pareto(pts, pareto_front(pts, keys=("tow", "neg_seconds")), x="seconds", y="tow",
                                       xlabel=sec_label, ylabel="selection ToW (val)",
                                       title=f"{alg} on {dataset}/{arch}: ToW vs cost",
                                       path=os.path.join(fig_dir, f"{tag}-pareto-tow-vs-seconds.png")))
        lines += [f"![{os.path.basename(p)}](figures/{os.path.basename(p)})" for p in made if p] + [""]
    if best:
        lines += ["## Best configs (selected on validation data, reported on the test set over fresh seeds)", "",
                  best_configs_markdown(best)]
    out = os.path.join(exp_dir, "report.md")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    return out


# --- study ------------------------------------------------------------------------------------------------

def study_rows(exp_dir: str) -> list[dict]:
    runs = os.path.join(exp_dir, "runs")
    names = sorted(os.listdir(runs)) if os.path.isdir(runs) else []
    rows = [_read_json(os.path.join(runs, n)) for n in names if n.endswith(".json")]
    if not rows:
        raise ConfigError(f"study {exp_dir} has no finished runs yet (runs/*.json)")
    return rows


def report_study(exp_dir: str) -> str:
    from unlearn_core.metrics import mean_ci

    from . import figures

    rows = study_rows(exp_dir)
    fig_dir = os.path.join(exp_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    groups = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["arch"])].append(r)
    lines = [f"# Study report ({os.path.basename(exp_dir)})", "",
             "Mean over the seeds actually run, with 95 % Student-t intervals. ToW / ToW-MIA columns average the "
             "requests of a run; speed-up = retrain seconds / unlearning seconds.", ""]
    for (dataset, arch), rs in sorted(groups.items()):
        tag = f"{dataset}-{arch}"
        seq = [r for r in rs if r["mode"] == "sequential"]
        curves: dict = defaultdict(lambda: defaultdict(list))
        for r in seq:
            for st in r["record"]["requests"]:
                for key in ("tow", "tow_mia", "test_acc", "retain_acc", "forget_acc"):
                    curves[key, r["method"]][st["request"] - 1].append(st[key])
                for key in ("test_acc", "retain_acc", "forget_acc"):
                    curves[key, "retrain"][st["request"] - 1].append(st["retrain"][key])
        methods = sorted({r["method"] for r in seq})

        def by(key, names, curves=curves):  # bound now: called within this iteration only
            return {m: [curves[key, m][i] for i in sorted(curves[key, m])] for m in names}

        made = []
        for key, label in (("tow", "ToW"), ("tow_mia", "ToW-MIA")):
            made.append(figures.per_step(by(key, methods), metric=key, ylabel=label,
                                         title=f"{label} per request: {dataset} / {arch}",
                                         path=os.path.join(fig_dir, f"{tag}-{key}.png")))
        for key, label in (("test_acc", "test accuracy (%)"), ("retain_acc", "retain accuracy (%)"),
                           ("forget_acc", "forget accuracy (%)")):
            made.append(figures.per_step(by(key, methods), metric=key, ylabel=label,
                                         title=f"{label.split(' (')[0]} per request vs retraining: {dataset} / {arch}",
                                         path=os.path.join(fig_dir, f"{tag}-{key}.png"),
                                         reference={"retrained from scratch": by(key, ["retrain"])["retrain"]}))
        lines += [f"## {dataset} / {arch}", ""]
        lines += [f"![{os.path.basename(p)}](figures/{os.path.basename(p)})" for p in made] + [""]
        lines += ["| method | mode | requests | seeds | diverged | ToW (95 % CI) | ToW-MIA (95 % CI) | unlearn s | "
                  "retrain s | speed-up |", "|---|---|---|---|---|---|---|---|---|---|"]
        table = defaultdict(list)
        for r in rs:
            table[r["method"], r["mode"]].append(r)
        for (method, mode), runs in sorted(table.items()):
            def ci(key, runs=runs):  # a diverged run scores 0 and counts in n (the run driver's rule)
                m, lo, hi = mean_ci([x["record"][key] for x in runs])
                return f"{m:.4f} [{lo:.4f}, {hi:.4f}]"
            un = sum(x["record"]["unlearn_seconds"] for x in runs) / len(runs)
            re = sum(x["record"]["retrain_seconds"] for x in runs) / len(runs)
            diverged = sum(1 for x in runs if x["record"].get("diverged"))
            speedup = re / un if un > 0 else float("inf")
            lines.append(f"| {method} | {mode} | {runs[0]['record']['request_count']} | {len(runs)} | {diverged} | "
                         f"{ci('tow')} | {ci('tow_mia')} | {un:.1f} | {re:.1f} | {speedup:.1f}× |")
        lines.append("")
    out = os.path.join(exp_dir, "report.md")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    return out


def make_report(exp_dir: str) -> str:
    return report_search(exp_dir) if kind_of(exp_dir) == "search" else report_study(exp_dir)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tuner.report",
                                description="Write PNG figures and report.md for a search or a study folder.")
    p.add_argument("experiment_dir", help="the folder of a search (search.json) or a study (study.json)")
    args = p.parse_args(argv)
    try:
        out = make_report(os.path.abspath(args.experiment_dir))
    except UnlearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
