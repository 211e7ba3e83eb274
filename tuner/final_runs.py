"""Winners: re-run the best configs of a search on fresh seeds; select on validation, report on test.

A search ranks configs on one seed, which flatters lucky configs. The top-k of each (dataset, arch), plus the
paper's own config, are re-run at full fidelity on `--final-seeds` seeds — never the search seed — as Ray tasks
through the run driver, with both views: the *selection* objective (validation data only) picks the winner by
the highest lower bound of its 95 % Student-t interval; the *report* metrics (the paper's, on the test set,
which nothing in the search or the winner rule read) are what the table publishes, with the paired difference
winner − paper on the same seeds. A diverged run scores 0 (the run driver's rule) and counts in n.

`finalize_pair` does it for one (dataset, arch) of a search: it picks the candidates from the trial rows, re-runs
them and returns the summary the outputs are written from (`tuner.outputs`).

A final run's result is kept in the store (tuner/records.py): the same run asked for again — the paper's config
in the next search on the same data and seeds, or after `--resume` — is read back instead of run.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Callable, Sequence

import numpy as np
import ray

from unlearn_core.data import Dataset
from unlearn_core.metrics import mean_ci
from unlearn_core.spec import ExperimentSpec

from . import records
from .outputs import pareto_front
from .progress import as_completed
from .task_names import final_task
from .trial_schema import ENDED

KEYS = ("sel_tow", "sel_tow_mia", "tow", "tow_mia")  # selection view, report view


def objective_value(row: dict, objective: str, view: str = "selection") -> float:
    """ToW, ToW-MIA, or (for `both`) their mean, of a view: `sel_tow`/`sel_tow_mia` or `tow`/`tow_mia`."""
    p = "sel_" if view == "selection" else ""
    if objective == "both":
        return (row[p + "tow"] + row[p + "tow_mia"]) / 2
    return row[p + objective]


def _run_one(spec: ExperimentSpec, dataset: Dataset, algorithm: str, params: dict, requests: int,
             ranking_model: str, cpus: float) -> dict:
    from unlearn_core.environment import use_cpus
    from unlearn_core.run import start
    from unlearn_core.training import pick_device
    from unlearn_core.workspace import Workspace

    key = records.final_key(spec, dataset, algorithm, params, requests, ranking_model, pick_device(spec.device).type)
    stored = records.load(spec, "final", key)  # the driver looked already; a store only workers reach did not
    if stored is not None:
        return stored
    use_cpus(cpus)
    rec = start(spec, algorithm, params, Workspace(spec, dataset), requests=requests,
                ranking_model=ranking_model, views=("selection", "report")).run()
    out = {**{k: rec[k] for k in KEYS}, "unlearn_seconds": rec["unlearn_seconds"], "diverged": rec["diverged"],
           "record": rec}
    records.store_of(spec).save("final", key, out)
    return out


def rerun(candidates: Sequence[dict], base: ExperimentSpec, dataset: Dataset, seeds: Sequence[int], *,
          algorithm: str, requests: int, ranking_model: str, cpus: float, gpus: float, objective: str,
          log: Callable[[str], None] = print) -> list[dict]:
    """Re-run each candidate ({"label", "params", ...}) on `seeds`; return them with intervals, best first."""
    log(f"final: re-running {len(candidates)} candidate(s) × {len(seeds)} seed(s) on {base.dataset}/{base.arch}")
    runs: dict[int, list] = {i: [] for i in range(len(candidates))}
    total = len(candidates) * len(seeds)

    def done(i: int, s: int, r: dict, how: str = "") -> None:
        runs[i].append({"seed": s, **r})
        log(f"  final {sum(map(len, runs.values()))}/{total}: {candidates[i]['label']} seed {s} "
            f"selection ToW {r['sel_tow']:.4f} ToW-MIA {r['sel_tow_mia']:.4f}"
            + (" (diverged: scores 0)" if r["diverged"] else "") + how)

    todo = []
    device = base.device or ("cuda" if gpus > 0 else "cpu")  # where the tasks will run (they key by what they find)
    for i, c in enumerate(candidates):
        for s in seeds:
            spec = dataclasses.replace(base, seed=int(s))
            stored = records.load(spec, "final", records.final_key(spec, dataset, algorithm, c["params"], requests,
                                                                   ranking_model, device))
            if stored is None:
                todo.append((i, s, spec))
            else:
                done(i, s, stored, " (the same run's stored result)")
    if todo:
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=2)(_run_one)
        data_ref = ray.put(dataset)
        jobs = {task.options(name=final_task(spec, candidates[i]["label"])).remote(
                    spec, data_ref, algorithm, candidates[i]["params"], requests, ranking_model, cpus): (i, s)
                for i, s, spec in todo}
        for (i, s), r in as_completed(jobs):
            done(i, s, r)
    return rank([{**c, "runs": sorted(runs[i], key=lambda r: r["seed"])} for i, c in enumerate(candidates)],
                 objective, seed=base.seed)


def finalize_pair(s, dataset_obj: Dataset, dataset: str, arch: str, rows: list[dict], seeds: list[int],
                  cpus: float, gpus: float, log: Callable[[str], None] = print) -> dict:
    """Top-k completed trials of search settings `s` + the paper's config, re-run on the fresh final seeds;
    winner by the lower 95 % bound of the selection objective; the report view and the paired difference
    winner − paper published."""
    import search_spaces

    completed = [r for r in rows if r["status"] == "completed"]
    tie = np.random.default_rng(s.sampler_seed).permutation(len(completed))  # ties: seeded order, never by id
    completed = [completed[i] for i in sorted(range(len(completed)),
                                              key=lambda i: (-objective_value(completed[i], s.objective), tie[i]))]
    paper = search_spaces.to_config_params(s.algorithm, search_spaces.paper_config(s.algorithm, dataset, arch))
    cands, seen = [{"label": "paper", "params": paper, "search": None}], [paper]
    for r in completed:
        if len(cands) > s.top_k:  # the paper's config plus the top-k distinct searched configs
            break
        p = json.loads(r["params"])
        if p in seen:
            continue
        seen.append(p)
        cands.append({"label": f"trial {r['trial_id']}", "params": p,
                      "search": {"sel_tow": r["sel_tow"], "sel_tow_mia": r["sel_tow_mia"]}})
    ranked = rerun(cands, s.spec(dataset, arch, seeds[0]), dataset_obj, seeds,
                   algorithm=search_spaces.get_space(s.algorithm).algorithm, requests=s.requests,
                   ranking_model=s.ranking_model, cpus=cpus, gpus=gpus, objective=s.objective, log=log)
    paper_row = next(c for c in ranked if c["label"] == "paper")
    searched = next((c for c in ranked if c["label"] != "paper"), None)
    # A searched config is recommended only if it wins the rule (highest lower bound) *and* its selection mean
    # is higher than the paper's: a narrower interval around a worse mean is not a better config.
    beats = ranked[0] is searched and searched["objective"]["mean"] > paper_row["objective"]["mean"]
    best = searched if beats else paper_row
    versus = searched  # the searched config the paper is compared with
    return {"dataset": dataset, "arch": arch, "algorithm": s.algorithm, "objective_name": s.objective,
            "beats_paper": beats, "label": best["label"], "params": best["params"],
            **{k: best[k] for k in ("sel_tow", "sel_tow_mia", "tow", "tow_mia", "objective", "seeds")},
            "diverged_runs": best["diverged_runs"], "search_seed": s.search_seed, "trials_run": len(rows),
            "trials": {st: sum(1 for r in rows if r["status"] == st) for st in ENDED},
            "gpu_seconds": sum((r.get("time_total_s") or 0) for r in rows) * gpus,
            "trial_seconds": sum((r.get("time_total_s") or 0) for r in rows),
            "paper": paper_row, "compared": versus["label"] if versus else None,
            "difference": ({k: paired(versus, paper_row, k) for k in ("tow", "tow_mia")} if versus else None),
            "candidates": [{k: c[k] for k in ("label", "params", "sel_tow", "sel_tow_mia", "tow", "tow_mia",
                                               "objective", "seeds", "search", "unlearn_seconds", "diverged_runs")}
                           for c in ranked],
            "pareto_front": [{k: r[k] for k in ("trial_id", "sel_tow", "sel_tow_mia", "params")}
                             for r in pareto_front(completed, keys=("sel_tow", "sel_tow_mia"))]}


def rank(candidates: Sequence[dict], objective: str, *, seed: int) -> list[dict]:
    """Candidates ({"label", "params", "runs": per-seed rows with sel_*/report keys, seed, diverged}) with
    intervals, best first: the highest lower 95 % bound of the selection objective wins; exact ties go by a
    random order seeded with `seed` (never by position or id)."""
    out = []
    for c in candidates:
        rs = c["runs"]
        row = {**c, "seeds": [r["seed"] for r in rs]}
        for key in KEYS:
            row[key] = ci([r[key] for r in rs])
        row["objective"] = ci([objective_value(r, objective) for r in rs])  # selection view: the winner rule
        row["unlearn_seconds"] = sum(r["unlearn_seconds"] for r in rs) / len(rs)
        row["diverged_runs"] = sum(1 for r in rs if r["diverged"])
        out.append(row)
    order = np.random.default_rng(seed).permutation(len(out))
    ranked = sorted(range(len(out)), key=lambda i: (-out[i]["objective"]["low"], -out[i]["objective"]["mean"],
                                                  order[i]))
    return [out[i] for i in ranked]


def ci(values) -> dict:
    m, lo, hi = mean_ci(list(values))
    return {"mean": m, "low": lo, "high": hi}


def paired(a: dict, b: dict, key: str) -> dict:
    """Mean and 95 % interval of a − b over the seeds both ran (the same seeds, hence the same data and retrains)."""
    by_seed = {r["seed"]: r[key] for r in b["runs"]}
    return ci([r[key] - by_seed[r["seed"]] for r in a["runs"] if r["seed"] in by_seed])
