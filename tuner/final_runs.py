"""Winners: re-run the best configs of a search on fresh seeds; select on validation, report on test.

A search ranks configs on one seed, which flatters lucky configs. The top-k of each (dataset, arch), plus the
paper's own config, are re-run at full fidelity on `--final-seeds` seeds — never the search seed — as Ray tasks
through the run driver, with both views: the *selection* objective (validation data only) picks the winner by
the highest lower bound of its 95 % Student-t interval; the *report* metrics (the paper's, on the test set,
which nothing in the search or the winner rule read) are what the table publishes, with the paired difference
winner − paper on the same seeds. A diverged run scores 0 (the run driver's rule) and counts in n.

A final run's result is kept in the store (tuner/records.py): the same run asked for again — the paper's config
in the next search on the same data and seeds, or after `--resume` — is read back instead of run.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import ray

from unlearn_core.data import Dataset
from unlearn_core.metrics import mean_ci
from unlearn_core.spec import ExperimentSpec

from . import records
from .progress import as_completed

OBJECTIVES = ("tow", "tow_mia", "both")
KEYS = ("sel_tow", "sel_tow_mia", "tow", "tow_mia")  # selection view, report view


def objective_value(row: dict, objective: str, view: str = "selection") -> float:
    """ToW, ToW-MIA, or (for `both`) their mean, of a view: `sel_tow`/`sel_tow_mia` or `tow`/`tow_mia`."""
    p = "sel_" if view == "selection" else ""
    if objective == "both":
        return (row[p + "tow"] + row[p + "tow_mia"]) / 2
    return row[p + objective]


def _run_one(spec: ExperimentSpec, dataset: Dataset, algorithm: str, params: dict, requests: int, selection: str,
             cpus: float) -> dict:
    from unlearn_core.environment import use_cpus
    from unlearn_core.run import start
    from unlearn_core.training import pick_device
    from unlearn_core.workspace import Workspace

    key = records.final_key(spec, dataset, algorithm, params, requests, selection, pick_device(spec.device).type)
    stored = records.load(spec, "final", key)  # the driver looked already; a store only workers reach did not
    if stored is not None:
        return stored
    use_cpus(cpus)
    rec = start(spec, algorithm, params, Workspace(spec, dataset), requests=requests, selection=selection,
                views=("selection", "report")).run()
    out = {**{k: rec[k] for k in KEYS}, "unlearn_seconds": rec["unlearn_seconds"], "diverged": rec["diverged"],
           "record": rec}
    records.store_of(spec).save("final", key, out)
    return out


def rerun(candidates: Sequence[dict], base: ExperimentSpec, dataset: Dataset, seeds: Sequence[int], *,
          algorithm: str, requests: int, selection: str, cpus: float, gpus: float, objective: str,
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
                                                                   selection, device))
            if stored is None:
                todo.append((i, s, spec))
            else:
                done(i, s, stored, " (the same run's stored result)")
    if todo:
        task = ray.remote(_run_one).options(num_cpus=cpus, num_gpus=gpus, max_retries=2)
        data_ref = ray.put(dataset)
        jobs = {task.remote(spec, data_ref, algorithm, candidates[i]["params"], requests, selection, cpus): (i, s)
                for i, s, spec in todo}
        for (i, s), r in as_completed(jobs):
            done(i, s, r)
    return rank([{**c, "runs": sorted(runs[i], key=lambda r: r["seed"])} for i, c in enumerate(candidates)],
                 objective, seed=base.seed)


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
