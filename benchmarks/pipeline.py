#!/usr/bin/env python3
"""What one GPU buys with this project's unlearning pipeline: throughput, trial cost, memory, study cost.

    python benchmarks/pipeline.py --out bench.json                       # one GPU, synthetic CIFAR-shaped data, ≤ 8 min
    python benchmarks/pipeline.py --data .data/cifar10-jpeg.npz --with-training --out bench.json
    python benchmarks/pipeline.py --tiny --out /tmp/bench.json           # CPU smoke run (CI), seconds

This file only runs the sections in order, prints the table and writes the JSON; each section is one file:
  P1   throughput.py (the project's unlearning epochs), classic.py (the DataLoader baseline),
       concurrency.py (2 / 4 / 8 trial processes, plainly and under CUDA MPS)   target ≥ 4.0× classic
  P2   trial_cost.py: one full-fidelity SCRUB trial through the run driver's calls   target ≥ 360 / H100-hour
  P5   trial_cost.py: peak GPU memory of that trial                                 target ≤ 8 GiB
  art. training_cost.py: training epochs, an original and a retrain, the artifact store
  P3   study_cost.py: the paper's whole study priced with the unit costs above      target ≤ 4 H100-hours
timing.py holds the timing discipline (airbench) and the provenance block, workload.py the sizes and data,
report.py the targets and the table. See benchmarks/README.md.

It measures what the project does — it adds no speed tricks of its own to unlearn_core. It imports only
unlearn_core, torch, torchvision, numpy and scikit-learn: the GPU machines have no Ray or Optuna.
"""
from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout that is not pip-installed (the GPU machine)
    sys.path.insert(0, str(ROOT))

SECTIONS = ("concurrency", "mps", "p1", "baseline", "artifacts", "p2", "p3")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Figures go to BENCHMARKS.md with date, device, torch version and command.")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run: width-0.125 models, a few hundred images")
    ap.add_argument("--out", help="write every figure + provenance as JSON here")
    ap.add_argument("--data", help="cifar10-jpeg.npz (real CIFAR-10); default: synthetic CIFAR-shaped uint8 data")
    ap.add_argument("--skip", nargs="+", default=[], choices=SECTIONS, metavar="SECTION",
                    help=f"sections to leave out: {', '.join(SECTIONS)}")
    ap.add_argument("--with-training", action="store_true",
                    help="train a ResNet-18 original and a retrain with the 30-epoch recipe (~2 min on an H100) "
                         "instead of estimating them from epoch times, and time one whole Run (always on in --tiny)")
    ap.add_argument("--profile", action="store_true", help="torch.profiler top-15 kernels of one SCRUB epoch")
    ap.add_argument("--concurrency", help="process counts, comma-separated (default 2,4,8; --tiny: 2)")
    ap.add_argument("--repeats", type=int, help="timed repeats for P1 and the baseline (default 3; --tiny: 2)")
    ap.add_argument("--trial-repeats", type=int, help="P2's timed trials (default 2)")
    ap.add_argument("--device", help="torch device (default: cuda when present, else cpu)")
    ap.add_argument("--seed", type=int, default=0)
    for flag, kw in (("--worker", dict(action="store_true")), ("--worker-pool", {}), ("--worker-barrier", {}),
                     ("--worker-epochs", dict(type=int, default=1)), ("--worker-id", dict(type=int, default=0))):
        ap.add_argument(flag, help=argparse.SUPPRESS, **kw)  # one concurrent trial process (concurrency.py)
    return ap.parse_args(argv)


def section(res: dict, name: str, fn: Callable[[], Any]):
    """Run one section; an exception is recorded (and fails the run at the end) instead of losing the rest."""
    from benchmarks.timing import log

    t0 = time.perf_counter()
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 — recorded in the JSON, exit status 1 at the end
        res.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}\n" + traceback.format_exc()[-2000:]
        log(f"[{name}] FAILED: {type(e).__name__}: {e}")
        return None
    finally:
        res.setdefault("section_seconds", {})[name] = time.perf_counter() - t0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:  # before the heavier imports: a worker needs only the unlearning epochs
        from benchmarks.concurrency import worker_main

        return worker_main(args)

    import torch

    from unlearn_core.environment import use_cpus
    from unlearn_core.jsonable import dumps
    from unlearn_core.training import pick_device

    from benchmarks import report, study_cost, throughput, timing, trial_cost, workload
    from benchmarks.classic import measure_classic
    from benchmarks.concurrency import run_concurrency
    from benchmarks.timing import log, mean_of
    from benchmarks.training_cost import measure_artifacts, train_img_s

    mode = "tiny" if args.tiny else "full"
    hyp = workload.HYP[mode]
    if args.repeats:
        hyp["run"]["repeats"] = args.repeats
    if args.trial_repeats:
        hyp["run"]["trial_repeats"] = args.trial_repeats
    if args.concurrency:
        hyp["run"]["concurrency"] = tuple(int(c) for c in args.concurrency.split(",") if c.strip())
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    if not cuda and args.tiny:
        use_cpus(1)  # a 2-core CI runner shares its cores with DataLoader and worker processes
    if cuda:
        torch.backends.cudnn.benchmark = True  # what prepare_model sets; the baseline gets it too
    skip = set(args.skip)
    tmp = Path(tempfile.mkdtemp(prefix="unlearn-bench-"))
    res: dict[str, Any] = {"notes": []}
    t_start = time.perf_counter()
    try:
        log(f"loading data ({'synthetic' if args.data is None else args.data}) ...")
        x_tr, y_tr, x_te, y_te, source = workload.load_pool(hyp, args.data, args.seed)
        prov = res["provenance"] = timing.provenance(device, mode, source, hyp)
        report.print_header(prov)
        p1: dict[str, Any] = {"project": {}, "classic": {}, "concurrency": {}, "ratio_vs_classic": {}}
        res["P1"] = p1

        # Concurrency first: this process must hold no CUDA context while the MPS daemon runs.
        if "concurrency" not in skip or "mps" not in skip:
            p1["concurrency"] = run_concurrency(x_tr, y_tr, tmp, hyp, args, cuda=cuda, res=res, section=section,
                                                plain="concurrency" not in skip, mps="mps" not in skip)

        timing.device_name_after_context(prov, device)  # this process's first CUDA call: MPS is gone by now
        retain, forget = workload.p1_sets(x_tr, y_tr, hyp, device)
        if "p1" not in skip:
            jobs = [(a, m, False) for m in workload.ARCHS for a in workload.ALGORITHMS] + [("scrub", "resnet18", True)]
            for alg, arch, aug in jobs:
                name = f"{alg}/{arch}" + ("+augment" if aug else "")
                log(f"[P1] project pipeline {name} ...")
                r = section(res, f"p1 {name}", lambda alg=alg, arch=arch, aug=aug: throughput.measure_project(
                    alg, arch, retain, forget, hyp, device, augment=aug, seed=args.seed))
                p1["project"][name] = r if r is not None else {"error": res["errors"][f"p1 {name}"][:300]}
                if r is not None:
                    log(f"    {report.ms(r['img_s'])} img/s")
                gc.collect()
        if "baseline" not in skip:
            nw = min(8, prov["cpus"] or 1)
            n_retain = hyp["data"]["retain"]
            for arch in workload.ARCHS:
                log(f"[P1] classic baseline {arch} (DataLoader, {nw} workers, fp32) ...")
                r = section(res, f"baseline {arch}", lambda arch=arch: measure_classic(
                    arch, x_tr[:n_retain], y_tr[:n_retain], hyp, device, nw, args.seed))
                p1["classic"][arch] = r if r is not None else {"error": res["errors"][f"baseline {arch}"][:300]}
                if r is not None:
                    log(f"    {report.ms(r['img_s'])} img/s")
                gc.collect()
        speedup, note = throughput.compare(p1)
        if note:
            res["notes"].append(note)

        made = None
        if "artifacts" not in skip or "p2" not in skip:
            made = section(res, "workspace", lambda: workload.trial_workspace(
                x_tr, y_tr, x_te, y_te, hyp, store=tmp / "store", device=args.device, seed=args.seed))
        ws, forget_ids = made or (None, None)
        trained = False
        if "artifacts" not in skip and ws is not None:
            log("[art] training epochs, original/retrain, ArtifactStore ...")
            with_training = args.with_training or args.tiny
            r = section(res, "artifacts", lambda: measure_artifacts(ws, forget_ids, hyp, with_training=with_training,
                                                                    seed=args.seed))
            if r is not None:
                res["artifacts"], trained = r, with_training
            gc.collect()

        if "p2" not in skip and ws is not None:
            log("[P2] one full-fidelity SCRUB ResNet-18 trial ...")
            r = section(res, "p2", lambda: trial_cost.measure_trial(ws, forget_ids, hyp, trained=trained))
            if r is not None:
                res["P2"], peak = r
                if trained:  # the original and its retrain are in the store: one trial through a whole Run
                    log("[P2] the same trial through run.start(...) ...")
                    rd = section(res, "p2 run driver", lambda: trial_cost.measure_run(ws, forget_ids, hyp, res["P2"]))
                    if rd is not None:
                        res["P2"]["run_driver"] = rd
                trial_cost.per_gpu_hour(res["P2"], speedup)
                res["P5"] = trial_cost.p5(peak, p1)

        if args.profile:
            log("[profile] one SCRUB ResNet-18 epoch ...")
            r = section(res, "profile", lambda: throughput.profile_epoch(retain, forget, hyp, device))
            if r is not None:
                res["profile"] = r

        if "p3" not in skip:
            def p3():
                img = {}
                for alg in workload.ALGORITHMS:
                    for arch in workload.ARCHS:
                        v = mean_of(p1["project"].get(f"{alg}/{arch}", {}).get("img_s"))
                        if not v:
                            return {"skipped": f"needs P1 {alg}/{arch}"}
                        img[(alg, arch)] = v
                if "artifacts" not in res or "P2" not in res:
                    return {"skipped": "needs the artifacts and P2 sections"}
                p2 = res["P2"]
                return study_cost.estimate_study(study_cost.UnitCosts(
                    unlearn_img_s=img, train_img_s=train_img_s(res["artifacts"]),
                    eval_img_s=p2["eval_images"] / mean_of(p2["eval_s"]), mia_s=mean_of(p2["mia_s"]),
                    speedup=speedup))
            r = section(res, "p3", p3)
            if r is not None:
                res["P3"] = r

        res["targets"] = report.targets(res, cuda)
    finally:
        res["total_seconds"] = time.perf_counter() - t_start
        shutil.rmtree(tmp, ignore_errors=True)
    if "provenance" in res:
        report.print_table(res["provenance"], res)
    log(f"# total {res['total_seconds']:.1f} s")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(dumps(res, indent=2) + "\n")
        log(f"# wrote {args.out}")
    if res.get("errors"):
        log(f"# {len(res['errors'])} section(s) failed: {', '.join(res['errors'])}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
