"""Winners: re-run the best configs of a search on more seeds and rank them by the 95 % lower bound.

A search ranks configs on one seed, which flatters lucky configs. The top-k of each (dataset, arch), plus the
paper's own config (so the table shows how much the search beat it), are re-run at full fidelity on
`--final-seeds` seeds as Ray tasks; each candidate's objective gets a mean and Student-t interval over the
seeds, and the winner is the candidate with the highest lower bound.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import ray

from unlearn_core.data import Dataset
from unlearn_core.experiment import ExperimentSpec
from unlearn_core.metrics import mean_ci

OBJECTIVES = ("tow", "tow_mia", "both")


def objective_value(row: dict, objective: str) -> float:
    """The number a candidate is ranked by: ToW, ToW-MIA, or (for `both`) their mean."""
    if objective == "both":
        return (row["tow"] + row["tow_mia"]) / 2
    return row[objective]


def _run_one(spec: ExperimentSpec, dataset: Dataset, algorithm: str, params: dict, steps: int, cpus: float) -> dict:
    import torch

    torch.set_num_threads(max(1, int(cpus)))
    if algorithm == "rum" or steps > 1:
        from unlearn_core.sequential import run_sequential

        from unlearn_core.experiment import Workspace

        rec = run_sequential(spec, algorithm, params, steps=steps, workspace=Workspace(spec, dataset))
        # A request that diverged before it could be evaluated scores 0: the worst ToW, not a hole in the mean.
        return {"tow": rec["tow"] or 0.0, "tow_mia": rec["tow_mia"] or 0.0, "unlearn_seconds": rec["unlearn_seconds"],
                "diverged": rec.get("diverged"), "record": rec}
    from unlearn_core.experiment import Workspace, run_experiment

    rec = run_experiment(spec, algorithm, params, workspace=Workspace(spec, dataset))
    return {"tow": rec["tow"], "tow_mia": rec["tow_mia"], "unlearn_seconds": rec["unlearn_seconds"],
            "diverged": rec["diverged"], "record": rec}


def rerun(candidates: Sequence[dict], base: ExperimentSpec, dataset: Dataset, seeds: Sequence[int], *,
          algorithm: str, steps: int, cpus: float, gpus: float, objective: str,
          log: Callable[[str], None] = print) -> list[dict]:
    """Re-run each candidate ({"label", "params", ...}) on `seeds`; return them with intervals, best first."""
    task = ray.remote(_run_one).options(num_cpus=cpus, num_gpus=gpus, max_retries=2)
    data_ref = ray.put(dataset)
    jobs = {}
    for i, c in enumerate(candidates):
        for s in seeds:
            spec = dataclasses.replace(base, seed=int(s))
            jobs[task.remote(spec, data_ref, algorithm, c["params"], steps, cpus)] = (i, s)
    log(f"final: re-running {len(candidates)} candidate(s) × {len(seeds)} seed(s) on {base.dataset}/{base.arch}")
    runs: dict[int, list] = {i: [] for i in range(len(candidates))}
    pending = list(jobs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        i, s = jobs[done[0]]
        r = ray.get(done[0])
        runs[i].append({"seed": s, **r})
        log(f"  final {sum(map(len, runs.values()))}/{len(jobs)}: {candidates[i]['label']} seed {s} "
            f"tow {r['tow']:.4f} tow_mia {r['tow_mia']:.4f}")
    out = []
    for i, c in enumerate(candidates):
        rs = sorted(runs[i], key=lambda r: r["seed"])
        row = {**c, "seeds": [r["seed"] for r in rs], "runs": rs}
        for key in ("tow", "tow_mia"):
            m, lo, hi = mean_ci([r[key] for r in rs])
            row[key] = {"mean": m, "low": lo, "high": hi}
        m, lo, hi = mean_ci([objective_value(r, objective) for r in rs])
        row["score"] = {"mean": m, "low": lo, "high": hi}
        row["unlearn_seconds"] = sum(r["unlearn_seconds"] for r in rs) / len(rs)
        row["diverged_runs"] = sum(1 for r in rs if r["diverged"])
        out.append(row)
    out.sort(key=lambda r: (-r["score"]["low"], -r["score"]["mean"]))
    return out


def pareto_front(rows: Sequence[dict], keys=("tow", "tow_mia")) -> list[dict]:
    """Rows not dominated by any other row (≥ in every key and > in one); all keys maximized."""
    front = []
    for a in rows:
        va = [a[k] for k in keys]
        if any(not math.isfinite(v) for v in va):
            continue
        dominated = any(all(b[k] >= a[k] for k in keys) and any(b[k] > a[k] for k in keys) for b in rows if b is not a)
        if not dominated:
            front.append(a)
    return front
