"""Winners: re-run the best configs of a search on more seeds and rank them by the 95 % lower bound.

A search ranks configs on one seed, which flatters lucky configs. The top-k of each (dataset, arch), plus the
paper's own config (so the table shows how much the search beat it), are re-run at full fidelity on
`--final-seeds` seeds as Ray tasks through the run driver; each candidate's objective gets a mean and Student-t
interval over the seeds, and the winner is the candidate with the highest lower bound. A diverged run scores
0 (the run driver's rule) and counts in n.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import ray

from unlearn_core.data import Dataset
from unlearn_core.metrics import mean_ci
from unlearn_core.spec import ExperimentSpec

from .progress import as_completed

OBJECTIVES = ("tow", "tow_mia", "both")


def objective_value(row: dict, objective: str) -> float:
    """The number a candidate is ranked by: ToW, ToW-MIA, or (for `both`) their mean."""
    if objective == "both":
        return (row["tow"] + row["tow_mia"]) / 2
    return row[objective]


def _run_one(spec: ExperimentSpec, dataset: Dataset, algorithm: str, params: dict, requests: int, selection: str,
             cpus: float) -> dict:
    from unlearn_core.environment import use_cpus
    from unlearn_core.run import start
    from unlearn_core.workspace import Workspace

    use_cpus(cpus)
    rec = start(spec, algorithm, params, Workspace(spec, dataset), requests=requests, selection=selection).run()
    return {"tow": rec["tow"], "tow_mia": rec["tow_mia"], "unlearn_seconds": rec["unlearn_seconds"],
            "diverged": rec["diverged"], "record": rec}


def rerun(candidates: Sequence[dict], base: ExperimentSpec, dataset: Dataset, seeds: Sequence[int], *,
          algorithm: str, requests: int, selection: str, cpus: float, gpus: float, objective: str,
          log: Callable[[str], None] = print) -> list[dict]:
    """Re-run each candidate ({"label", "params", ...}) on `seeds`; return them with intervals, best first."""
    task = ray.remote(_run_one).options(num_cpus=cpus, num_gpus=gpus, max_retries=2)
    data_ref = ray.put(dataset)
    jobs = {}
    for i, c in enumerate(candidates):
        for s in seeds:
            spec = dataclasses.replace(base, seed=int(s))
            jobs[task.remote(spec, data_ref, algorithm, c["params"], requests, selection, cpus)] = (i, s)
    log(f"final: re-running {len(candidates)} candidate(s) × {len(seeds)} seed(s) on {base.dataset}/{base.arch}")
    runs: dict[int, list] = {i: [] for i in range(len(candidates))}
    for (i, s), r in as_completed(jobs):
        runs[i].append({"seed": s, **r})
        log(f"  final {sum(map(len, runs.values()))}/{len(jobs)}: {candidates[i]['label']} seed {s} "
            f"tow {r['tow']:.4f} tow_mia {r['tow_mia']:.4f}" + (" (diverged: scores 0)" if r["diverged"] else ""))
    out = []
    for i, c in enumerate(candidates):
        rs = sorted(runs[i], key=lambda r: r["seed"])
        row = {**c, "seeds": [r["seed"] for r in rs], "runs": rs}
        for key in ("tow", "tow_mia"):
            m, lo, hi = mean_ci([r[key] for r in rs])
            row[key] = {"mean": m, "low": lo, "high": hi}
        m, lo, hi = mean_ci([objective_value(r, objective) for r in rs])
        row["objective"] = {"mean": m, "low": lo, "high": hi}
        row["unlearn_seconds"] = sum(r["unlearn_seconds"] for r in rs) / len(rs)
        row["diverged_runs"] = sum(1 for r in rs if r["diverged"])
        out.append(row)
    out.sort(key=lambda r: (-r["objective"]["low"], -r["objective"]["mean"]))
    return out
