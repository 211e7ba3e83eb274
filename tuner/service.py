"""The search itself: connect to Ray, prepare artifacts, run one Tuner per (dataset, arch), pick winners.

Kept apart from the CLI (`tuner/search.py`) so tests and the study can call `run_search(plan)` directly.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Callable

from unlearn_core.errors import ConfigError

from .final_runs import objective_value, pareto_front, rerun
from .outputs import best_configs_markdown, trials_table
from .search import Plan, write_text

MAX_EPOCHS = 10  # the flat spaces' largest `epochs`: ASHA's max_t (rungs at 3 and 9: epoch-1 ToW says little,
#                 since every config still sits near the original then)


def log(msg: str) -> None:
    print(msg, flush=True)


def optuna_storage(url: str):
    """An RDB URL (sqlite:///, postgresql://, mysql://) or `journal:///path/study.log` (Optuna's journal file,
    safe on NFS where SQLite's locking is not)."""
    import optuna

    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal://"):]))
    return optuna.storages.RDBStorage(url)


def connect(plan: Plan) -> dict:
    """Join `--address` or start a local Ray (dashboard on localhost, token auth as Ray defaults it)."""
    import ray

    a = plan.args
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    # Snapshot the experiment state at least every 10 s: a driver killed without warning loses (and --resume
    # re-runs) at most the trial results of the last few seconds.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "10")
    # Short trials checkpoint every few seconds by design (a retried trial resumes at its last epoch); Tune's
    # "snapshotting triggered multiple times" warning would repeat after every epoch, so it is silenced.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # trials use absolute paths; keep cwd for imports
    # Trials must import this project: ship the checkout's modules when it is not installed as a package.
    if a.get("address"):
        try:
            ctx = ray.init(address=a["address"], log_to_driver=False)
        except ConnectionError as e:  # Ray chains the reason (a traceback text) under "Failed to connect"
            why = next((ln for ln in reversed(str(e.__cause__ or e).splitlines()) if ln.strip()), str(e))
            if "InvalidAuthToken" in why:
                why = ("its token auth refused this driver's token; use the cluster's (`ray get-auth-token` on the "
                       "head prints it) via ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN")
            raise ConfigError(f"cannot join the Ray cluster at {a['address']}: {' '.join(why.split())[:300]}") from None
    else:
        kw = {"num_gpus": a["local_gpus"]} if a.get("local_gpus") is not None else {}
        # address="local": always a new local Ray, never a cluster some `ray start` left in /tmp/ray.
        ctx = ray.init(address="local", include_dashboard=not a.get("no_dashboard"), dashboard_host="127.0.0.1",
                       log_to_driver=False, **kw)
    res = ray.cluster_resources()
    url = getattr(ctx, "dashboard_url", None)
    if url:
        log(f"Ray dashboard: http://{url} (token: `ray get-auth-token`); "
            f"{int(res.get('CPU', 0))} CPUs, {res.get('GPU', 0):g} GPUs in the cluster")
    return res


def trial_resources(plan: Plan, res: dict) -> tuple[float, float, int]:
    a = plan.args
    gpus_total = res.get("GPU", 0)
    g = a["gpus_per_trial"]
    if g is None:
        g = 0.25 if gpus_total else 0.0
    if g > 0 and not gpus_total:
        raise ConfigError(f"--gpus-per-trial {g} asks for GPUs, but the Ray cluster has none")
    c = a["cpus_per_trial"]
    limit = int(res.get("CPU", 1) // c)
    if g > 0:
        limit = min(limit, int(gpus_total / g + 1e-9))
    return c, g, max(1, a["max_concurrent"] or limit)


def seeds_of(a: dict) -> tuple[int, list[int]]:
    seeds = list(dict.fromkeys(a["seeds"]))
    extra = (s for s in range(10_000) if s not in seeds)
    while len(seeds) < a["final_seeds"]:
        seeds.append(next(extra))
    return seeds[0], seeds[:a["final_seeds"]]


def base_spec(a: dict, dataset: str, arch: str, seed: int):
    from unlearn_core.experiment import ExperimentSpec

    return ExperimentSpec(dataset=dataset, arch=arch, width=a["width"], seed=seed, forget=a["forget"],
                          forget_size=a["forget_size"],
                          forget_classes=tuple(int(c) for c in str(a["forget_classes"]).split(",") if c != ""),
                          proxy=a["proxy"], data_dir=a["data_dir"], store=a["store"], device=a["device"],
                          train_epochs=a["train_epochs"])


def run_search(plan: Plan) -> int:
    import ray

    from unlearn_core.data import load_dataset
    from unlearn_core.experiment import environment

    from .prepare import prepare

    a = plan.args
    a.setdefault("store", plan.store)
    a["store"] = plan.store
    datasets = {d: load_dataset(d, a["data_dir"], 1) for d in dict.fromkeys(p[0] for p in plan.pairs)}
    res = connect(plan)
    cpus, gpus, concurrent = trial_resources(plan, res)
    search_seed, final_seeds = seeds_of(a)
    meta = {**dataclasses.asdict(plan), "env": environment(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "search_seed": search_seed, "final_seeds": final_seeds,
            "resources": {"cpus_per_trial": cpus, "gpus_per_trial": gpus, "max_concurrent": concurrent}}
    if not a.get("resume"):
        write_text(f"{plan.exp_dir}/search.json", json.dumps(meta, indent=1, default=str))
    log(f"experiment: {plan.exp_dir}\nOptuna study: optuna-dashboard {plan.optuna_url}")
    needs_proxy = a["algorithm"].startswith("rum") or a["forget"] == "mix"
    specs = [base_spec(a, d, ar, s) for d, ar in plan.pairs for s in final_seeds]
    prepare(specs, datasets, cpus=cpus, gpus=gpus, proxies=(a["proxy"],) if needs_proxy else (),
            steps=a["steps"], log=log)

    summary, all_trials = [], []
    for dataset, arch in plan.pairs:
        rows, interrupted = tune_pair(plan, datasets[dataset], dataset, arch, search_seed, cpus, gpus, concurrent)
        all_trials.extend(rows)
        write_text(f"{plan.exp_dir}/trials.csv", trials_table(all_trials).to_csv(index=False))
        if interrupted:
            log(f"search interrupted; continue with: python -m tuner.search {a['algorithm']} --name "
                f"{os.path.basename(plan.exp_dir)} --storage {a['storage']} --resume")
            return 130
        summary.append(finalize_pair(plan, datasets[dataset], dataset, arch, rows, final_seeds, cpus, gpus))
        write_outputs(plan, summary)
    log("\n" + best_configs_markdown(summary))
    ray.shutdown()
    return 0


def tune_pair(plan: Plan, dataset_obj, dataset: str, arch: str, seed: int, cpus: float, gpus: float,
              concurrent: int) -> tuple[list[dict], bool]:
    """Run (or resume, or reload) the Tuner of one (dataset, arch); return its trial rows and whether it stopped early."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    import search_spaces

    from .trainable import run_trial

    a = plan.args
    space = search_spaces.get_space(a["algorithm"])
    trainable = tune.with_resources(tune.with_parameters(run_trial, dataset=dataset_obj), {"cpu": cpus, "gpu": gpus})
    path = f"{plan.exp_dir}/tune-{dataset}-{arch}"
    objective = a["objective"]
    if tune.Tuner.can_restore(path):
        log(f"resuming {path}")
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    else:
        spec = base_spec(a, dataset, arch, seed)
        metric, mode = (["tow", "tow_mia"], ["max", "max"]) if objective == "both" else (objective, "max")
        first = search_spaces.paper_config(a["algorithm"], dataset, arch)
        paper = [first] + ([c for c in space.paper_configs if c != first] if a["num_samples"] >= 16 else [])
        extra = list(a.get("points") or [])  # --points: evaluated before the paper's configs
        points = extra + [c for c in paper if c not in extra]
        searcher = OptunaSearch(
            space.define, metric=metric, mode=mode, points_to_evaluate=points[:a["num_samples"]],
            sampler=optuna.samplers.TPESampler(seed=a["sampler_seed"]),
            storage=optuna_storage(plan.optuna_url), study_name=f"{dataset}-{arch}")
        # ASHA needs one metric; with `both` it ranks by ToW (every trial still reports both).
        scheduler = ASHAScheduler(metric="tow" if objective != "tow_mia" else "tow_mia", mode="max",
                                  max_t=MAX_EPOCHS, grace_period=3, reduction_factor=3)
        tuner = tune.Tuner(
            trainable,
            param_space={"spec": dataclasses.asdict(spec), "space": space.name, "algorithm": space.algorithm,
                         "cpus_per_trial": cpus, "steps": a["steps"]},
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=a["num_samples"],
                                        max_concurrent_trials=concurrent),
            run_config=tune.RunConfig(
                name=f"tune-{dataset}-{arch}", storage_path=plan.exp_dir,
                failure_config=tune.FailureConfig(max_failures=a["max_failures"]),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2), verbose=1))
    log(f"search: {a['algorithm']} on {dataset}/{arch}, {a['num_samples']} trials, {concurrent} at once, "
        f"{cpus:g} CPU + {gpus:g} GPU each")
    rg = tuner.fit()
    finished = rg.num_terminated + rg.num_errors
    interrupted = finished < len(rg) or len(rg) < a["num_samples"]
    if not interrupted:  # all Tune trials ended: a RUNNING Optuna trial was asked for by a killed driver after
        #                  its last experiment snapshot (--resume asks anew); close it so the study has no phantom
        study = optuna.load_study(study_name=f"{dataset}-{arch}", storage=optuna_storage(plan.optuna_url))
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            log(f"optuna trial {t.number}: RUNNING without a Tune trial (driver killed before snapshot) -> FAIL")
    # Tune's own trial states tell an ASHA stop (TERMINATED before the last epoch) from a trial cut off by an
    # interrupt (RUNNING / PENDING / PAUSED), which `--resume` will finish.
    states = {t.trial_id: t.status for t in rg._experiment_analysis.trials}
    rows = []
    for r in rg:
        m = dict(r.metrics or {})
        status = ("error" if r.error else "pruned" if m.get("pruned") else
                  "completed" if m.get("final") else
                  "stopped" if states.get(m.get("trial_id"), "TERMINATED") == "TERMINATED" else "unfinished")
        rows.append({"dataset": dataset, "arch": arch, "trial_id": m.get("trial_id", os.path.basename(r.path)),
                     "status": status, "prune_reason": m.get("prune_reason", "") or (str(r.error)[:200] if r.error else ""),
                     **{k: m.get(k) for k in ("epoch", "tow", "tow_mia", "forget_acc", "retain_acc", "val_acc",
                                              "test_acc", "mia", "unlearn_seconds", "time_total_s", "node_id")},
                     "params": json.dumps(search_spaces.to_config_params(space, r.config)) if r.config else "{}"})
    return rows, interrupted


def finalize_pair(plan: Plan, dataset_obj, dataset: str, arch: str, rows: list[dict], seeds: list[int],
                  cpus: float, gpus: float) -> dict:
    """Top-k completed trials + the paper's config, re-run on the final seeds; winner by the 95 % lower bound."""
    import search_spaces

    a = plan.args
    objective = a["objective"]
    completed = [r for r in rows if r["status"] == "completed"]
    completed.sort(key=lambda r: -objective_value(r, objective))
    paper = search_spaces.to_config_params(a["algorithm"], search_spaces.paper_config(a["algorithm"], dataset, arch))
    cands, seen = [{"label": "paper", "params": paper, "search": None}], [paper]
    for r in completed:
        if len(cands) > a["top_k"]:  # the paper's config plus the top-k distinct searched configs
            break
        p = json.loads(r["params"])
        if p in seen:
            continue
        seen.append(p)
        cands.append({"label": f"trial {r['trial_id']}", "params": p,
                      "search": {"tow": r["tow"], "tow_mia": r["tow_mia"]}})
    space_alg = search_spaces.get_space(a["algorithm"]).algorithm
    ranked = rerun(cands, base_spec(a, dataset, arch, seeds[0]), dataset_obj, seeds, algorithm=space_alg,
                   steps=a["steps"], cpus=cpus, gpus=gpus, objective=objective, log=log)
    front = pareto_front(completed)
    best = ranked[0]
    return {"dataset": dataset, "arch": arch, "algorithm": a["algorithm"], "objective": objective,
            "params": best["params"], "label": best["label"], "tow": best["tow"], "tow_mia": best["tow_mia"],
            "score": best["score"], "seeds": best["seeds"], "trials_run": len(rows),
            "trials": {s: sum(1 for r in rows if r["status"] == s) for s in ("completed", "stopped", "pruned", "error")},
            "gpu_seconds": sum((r.get("time_total_s") or 0) for r in rows) * gpus,
            "trial_seconds": sum((r.get("time_total_s") or 0) for r in rows),
            "paper": next(c for c in ranked if c["label"] == "paper"),
            "candidates": [{k: c[k] for k in ("label", "params", "tow", "tow_mia", "score", "seeds", "search",
                                               "unlearn_seconds", "diverged_runs")} for c in ranked],
            "pareto_front": [{k: r[k] for k in ("trial_id", "tow", "tow_mia", "params")} for r in front]}


def write_outputs(plan: Plan, summary: list[dict]) -> None:
    import pandas as pd

    clean = json.loads(json.dumps(summary, default=str))
    for s in clean:  # the per-seed records are long; keep them in final_runs.json, not the summary
        s["paper"].pop("runs", None)
    write_text(f"{plan.exp_dir}/best_configs.json", json.dumps(clean, indent=1))
    write_text(f"{plan.exp_dir}/best_configs.md", best_configs_markdown(summary))
    flat = [{"dataset": s["dataset"], "arch": s["arch"], "algorithm": s["algorithm"], "objective": s["objective"],
             "tow": s["tow"]["mean"], "tow_low": s["tow"]["low"], "tow_high": s["tow"]["high"],
             "tow_mia": s["tow_mia"]["mean"], "tow_mia_low": s["tow_mia"]["low"], "tow_mia_high": s["tow_mia"]["high"],
             "seeds": " ".join(map(str, s["seeds"])), "params": json.dumps(s["params"])} for s in summary]
    write_text(f"{plan.exp_dir}/best_configs.csv", pd.DataFrame(flat).to_csv(index=False))
    fronts = [{"dataset": s["dataset"], "arch": s["arch"], **p} for s in summary for p in s["pareto_front"]]
    write_text(f"{plan.exp_dir}/pareto_front.csv", pd.DataFrame(fronts).to_csv(index=False))
