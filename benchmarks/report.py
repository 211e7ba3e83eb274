"""The benchmark's verdicts and its printed table: the H100 targets judged on this run's figures (never on a
CPU's), and one row per figure under a header that says where the figures came from."""
from __future__ import annotations

import math
from typing import Optional

from benchmarks.throughput import CONC_JOB
from benchmarks.timing import log

TARGETS = dict(p1_ratio=4.0, p2_trials_per_hour=360.0, p3_gpu_hours=4.0, p5_gib=8.0)


def targets(res: dict, cuda: bool) -> list[dict]:
    """The H100 targets against this run's figures; `met` is None off a GPU (CPU figures judge nothing)."""
    def judge(v, ok):
        return None if (not cuda or v is None) else bool(ok(v))

    p1 = res.get("P1", {}).get("best_aggregate", {}).get("ratio_vs_classic")
    p2 = res.get("P2", {}).get("trials_per_gpu_hour")
    p3 = res.get("P3", {}).get("gpu_hours_packed")
    p5 = res.get("P5", {}).get("max_memory_allocated_gib")
    T = TARGETS
    return [
        {"name": "P1", "target": f"best aggregate ≥ {T['p1_ratio']}× classic", "measured": p1,
         "met": judge(p1, lambda v: v >= T["p1_ratio"])},
        {"name": "P2", "target": f"≥ {T['p2_trials_per_hour']:.0f} trials/GPU-hour", "measured": p2,
         "met": judge(p2, lambda v: v >= T["p2_trials_per_hour"])},
        {"name": "P3", "target": f"study ≤ {T['p3_gpu_hours']} GPU-hours (packed)", "measured": p3,
         "met": judge(p3, lambda v: v <= T["p3_gpu_hours"])},
        {"name": "P5", "target": f"peak ≤ {T['p5_gib']} GiB", "measured": p5,
         "met": judge(p5, lambda v: v <= T["p5_gib"])},
    ]


def fmt(x: Optional[float]) -> str:
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "—"
    a = abs(x)
    if a >= 100:
        return f"{x:,.0f}"
    return f"{x:.1f}" if a >= 10 else f"{x:.2f}" if a >= 1 else f"{x:.3f}" if a >= 0.01 else f"{x:.2g}"


def ms(d) -> str:
    """A `summary` as "mean ± std" (just the mean for one value)."""
    if not isinstance(d, dict) or d.get("mean") is None:
        return "—"
    return fmt(d["mean"]) + (f" ± {fmt(d['std'])}" if d.get("n", 0) > 1 else "")


def _p1_rows(p1: dict) -> list[tuple[str, str, str]]:
    rows = []
    for k, v in p1.get("project", {}).items():
        if "img_s" in v:
            ratio = p1.get("ratio_vs_classic", {}).get(k)
            rows.append(("P1", f"project {k} img/s" + (" (DIVERGED)" if "diverged" in v else ""),
                         ms(v["img_s"]) + (f"   ({fmt(ratio)}× classic)" if ratio else "")))
        elif "error" in v:
            rows.append(("P1", f"project {k}", "error"))
    for k, v in p1.get("classic", {}).items():
        rows.append(("P1", f"classic {k} img/s (DataLoader×{v.get('num_workers', '?')}, fp32)",
                     ms(v.get("img_s")) if "img_s" in v else "error"))
    for kind in ("plain", "mps"):
        conc = p1.get("concurrency", {}).get(kind, {})
        if "note" in conc:
            rows.append(("P1", f"concurrency {kind}", conc["note"]))
        for n, v in conc.get("levels", {}).items():
            if "error" in v:
                rows.append(("P1", f"{n} procs {kind} aggregate img/s", "error: " + v["error"][:60]))
            else:
                sp = v.get("speedup_vs_1")
                rows.append(("P1", f"{n} procs {kind} aggregate img/s ({'/'.join(CONC_JOB)})",
                             fmt(v["aggregate_img_s"]) + (f"   ({fmt(sp)}× one process)" if sp else "")))
    if "best_aggregate" in p1:
        b = p1["best_aggregate"]
        rows.append(("P1", f"best aggregate / classic resnet18 [{b['where']}]", fmt(b.get("ratio_vs_classic")) + "×"))
    return rows


def _p2_p5_rows(p2: dict, p5: dict) -> list[tuple[str, str, str]]:
    rows = []
    for k, lab in (("setup_s", "trial setup s"), ("unlearn_s", "trial unlearning s"),
                   ("eval_s", "trial evaluation s (GPU)"), ("mia_s", "trial SVC MIA s (CPU)")):
        if k in p2:
            rows.append(("P2", lab, ms(p2[k])))
    for k, lab in (("trials_per_gpu_hour", "trials / GPU-hour (MIA off GPU path, × S)"),
                   ("trials_per_gpu_hour_inline_mia", "trials / GPU-hour (MIA inline, × S)")):
        if p2.get(k) is not None:
            rows.append(("P2", lab, fmt(p2[k])))
    rd = p2.get("run_driver")
    if rd:
        rows.append(("P2", "whole Run (run.start) wall s / of which driver overhead s",
                     f"{fmt(rd['wall_s'])} / {fmt(rd.get('driver_overhead_s'))}"))
    if p5:
        rows.append(("P5", "peak allocated / reserved GiB",
                     "—" if p5.get("max_memory_allocated_gib") is None else
                     f"{fmt(p5['max_memory_allocated_gib'])} / {fmt(p5['max_memory_reserved_gib'])}"))
    return rows


def _art_p3_rows(art: dict, p3: dict) -> list[tuple[str, str, str]]:
    rows = []
    for k, v in art.get("train_epoch", {}).items():
        rows.append(("art", f"train epoch s {k}", ms(v["epoch_s"])))
    for k in ("original_s", "retrain_s"):
        if k in art:
            rows.append(("art", f"{k[:-2]} resnet18 s ({art['recipe_epochs']} ep, {art[k]['kind'].split(' ')[0]})",
                         fmt(art[k]["value"])))
    if "store" in art:
        rows.append(("art", "ArtifactStore save / load s (resnet18)",
                     f"{ms(art['store']['save_s'])} / {ms(art['store']['load_s'])}"))
    if "gpu_hours" in p3:
        b = p3["breakdown_gpu_hours"]
        rows.append(("P3", "study GPU-hours, one process", fmt(p3["gpu_hours"])))
        rows.append(("P3", f"study GPU-hours, packed (÷ S={fmt(p3['speedup_S'])})", fmt(p3["gpu_hours_packed"])))
        rows.append(("P3", "  of which unlearning / retrain+original / eval", " / ".join(fmt(x) for x in (
            sum(v for k, v in b.items() if "vanilla" in k or "rum" in k), b["retrain"] + b["original"], b["eval"]))))
        rows.append(("P3", "MIA CPU-hours (apart)", fmt(p3["mia_cpu_hours"])))
    elif "skipped" in p3:
        rows.append(("P3", "study estimate", "skipped: " + p3["skipped"]))
    return rows


def table(res: dict) -> list[tuple[str, str, str]]:
    rows = _p1_rows(res.get("P1", {})) + _p2_p5_rows(res.get("P2", {}), res.get("P5", {})) \
        + _art_p3_rows(res.get("artifacts", {}), res.get("P3", {}))
    for t in res.get("targets", []):
        verdict = "n/a (not a GPU)" if t["met"] is None else ("MET" if t["met"] else "MISSED")
        rows.append(("target", f"{t['name']}: {t['target']}", f"{fmt(t['measured'])}  {verdict}"))
    return rows


def print_header(prov: dict) -> None:
    log(f"# benchmarks/pipeline.py — unlearning pipeline throughput and cost ({prov['mode']} mode)")
    log(f"# device: {prov['device']} | torch {prov['torch']} (CUDA {prov['cuda']}) | {prov['date']}")
    log(f"# command: {prov['command']}")
    log(f"# data: {prov['data']} | git {prov['git_commit']} | mean ± std over n repeats, warm-up excluded")


def print_table(prov: dict, res: dict) -> None:
    rows = table(res)
    w1 = max(len(r[1]) for r in rows) if rows else 10
    log("")
    print_header(prov)
    if prov["device_type"] != "cuda":
        log("# CPU FIGURES: a code-path smoke run, not a measurement of the GPU pipeline")
    log(f"{'sec':<7}| {'measurement':<{w1}} | value")
    log(f"{'-' * 7}|-{'-' * w1}-|{'-' * 30}")
    for sec, what, val in rows:
        log(f"{sec:<7}| {what:<{w1}} | {val}")
    for note in res.get("notes", []):
        log(f"# note: {note}")
