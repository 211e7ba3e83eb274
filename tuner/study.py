"""`python -m tuner.study`: run a grid of methods × datasets × archs × seeds × k sequential requests, then report.

Every cell runs as a Ray task sharing the artifact store (originals and retrains are built once and reused by
every method of the same seed); each finished cell is written to `runs/<cell>.json`, so re-running the same
command with `--name` resumes and only runs what is missing. The study ends with `tuner.report`'s figures
and table.

Methods, per forget-set proxy: vanilla SCRUB / NegGrad+ and RUM built on either (three memorization subsets,
low → mid → high). Beyond the paper (its §6.3 future work): every vanilla method also runs **one-shot** —
forgetting the union of the k requests in a single step, against the same retrained model as request k — so
one-shot and sequential sit side by side; `--forget class` makes each request a whole class; and every table
carries the unlearning speed-up over retraining.

Presets: `paper` is the paper's grid (Tables C.1–C.4: CIFAR-10/100 × ResNet-18/VGG-16-bn, 5 seeds, 5 requests
of 3,000 by the mix of each of the five proxies, the paper's configs — what the paper ran, see
`search_spaces`); `smoke` is a digits-sized version that runs in CI in a few minutes.

The `paper` preset's hold-out proxy is `holdout_test`, fine-tuned on the test split as the paper (RUM's
`ho_ret`) did, because the validation variant ranks examples differently (Spearman 0.61) and would not
reproduce its groups; searches keep `holdout`, the validation variant, so that no test data leak into a search.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Optional, Sequence

from unlearn_core.errors import ConfigError, UnlearnError

PAPER_PROXIES = ("confidence", "max_conf", "entropy", "bin_acc", "holdout_test")  # test-split hold-out, as the paper

PRESETS = {
    "paper": {"datasets": ["cifar10", "cifar100"], "archs": ["resnet18", "vgg16_bn"], "seeds": [0, 1, 2, 3, 4],
              "requests": 5, "forget": "mix", "proxies": list(PAPER_PROXIES), "width": None, "train_epochs": None,
              "forget_size": None, "epochs_scale": None},
    # digits, two seeds so intervals exist, two requests, one proxy, vanilla and RUM; short runs so CI stays fast
    "smoke": {"datasets": ["digits"], "archs": ["resnet18"], "seeds": [0, 1], "requests": 2, "forget": "mix",
              "proxies": ["confidence"], "width": 0.125, "train_epochs": 3, "forget_size": 60, "epochs_scale": 0.3,
              "methods": ["scrub", "neggrad_plus", "rum_neggrad_plus"]},
}
BASES = ("scrub", "neggrad_plus")


def method_params(base: str, rum: bool, dataset: str, arch: str, configs: Optional[list], scale: Optional[float]) -> dict:
    """The config of one method: from a search's best_configs.json when given, else the paper's."""
    import search_spaces

    space = f"rum_{base}" if rum else base
    params = None
    for c in configs or []:
        if c["algorithm"] == space and c["dataset"] == dataset and c["arch"] == arch:
            params = c["params"]
    if params is None:
        params = search_spaces.to_config_params(space, search_spaces.paper_config(space, dataset, arch))
    if scale:  # the smoke preset shortens every run; the paper preset never scales
        def shrink(p):
            p = dict(p)
            if "epochs" in p:
                p["epochs"] = max(1, round(p["epochs"] * scale))
                if "max_steps" in p:
                    p["max_steps"] = min(p["max_steps"], p["epochs"])
            return p
        params = {"plan": [{**s, "params": shrink(s["params"])} for s in params["plan"]]} if rum else shrink(params)
    return params


@dataclasses.dataclass(frozen=True)
class Cell:
    dataset: str
    arch: str
    seed: int
    base: str
    rum: bool
    proxy: str

    @property
    def method(self) -> str:
        return f"{'RUM ' if self.rum else ''}{self.base}" + (f" ({self.proxy})" if self.proxy else "")

    def name(self, mode: str) -> str:
        from unlearn_core.proxies import proxy_label  # scores:FILE → a file-name-safe label

        px = proxy_label(self.proxy) if self.proxy else "none"
        return f"{self.dataset}-{self.arch}-{'rum_' if self.rum else ''}{self.base}-{px}-{mode}-seed{self.seed}"


def _run_cell(cell: Cell, spec, dataset_obj, params: dict, requests: int, cpus: float) -> list[dict]:
    """The sequential run of one cell (and, for vanilla methods, its one-shot twin), through the run driver."""
    import numpy as np

    from unlearn_core.environment import use_cpus
    from unlearn_core.run import start
    from unlearn_core.workspace import Workspace

    use_cpus(cpus)
    ws = Workspace(spec, dataset_obj)
    sets = []
    algorithm = "rum" if cell.rum else cell.base
    p = {**params, "proxy": cell.proxy} if cell.rum else params
    rec = start(spec, algorithm, p, ws, requests=requests,
                on_request=lambda r, model, req: sets.append(np.asarray(req.forget_ids))).run()
    out = [{"mode": "sequential", "record": rec}]
    if not cell.rum and len(sets) == requests and requests > 1:
        one = start(spec, algorithm, params, ws, forget_ids=np.concatenate(sets)).run()
        one["forgotten"] = int(sum(map(len, sets)))  # one-shot: the union of the k requests, one request
        out.append({"mode": "one-shot", "record": one})
    return out


def build_parser() -> argparse.ArgumentParser:
    from unlearn_core.cli_args import int_list
    from unlearn_core.spec import FORGET_KINDS

    p = argparse.ArgumentParser(prog="python -m tuner.study",
                                description="Run a grid of unlearning methods over sequential deletion requests "
                                            "as Ray tasks, then write the report (figures + tables).")
    p.add_argument("--preset", choices=sorted(PRESETS), default="smoke",
                   help="paper: the paper's grid (CIFAR-10/100 × ResNet-18/VGG-16-bn, 5 seeds, 5 requests, 5 proxies); "
                        "smoke: a digits-sized version for CI (default)")
    p.add_argument("--configs", default=None,
                   help="best_configs.json of a search: its winners replace the paper's configs where they match")
    p.add_argument("--dataset", nargs="+", default=None, help="override the preset's datasets")
    p.add_argument("--arch", nargs="+", default=None, help="override the preset's architectures")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the preset's seeds")
    p.add_argument("--requests", type=int, default=None, help="override the number of sequential deletion requests")
    p.add_argument("--proxies", nargs="+", default=None, metavar="PROXY",
                   help="override the proxies (RUM and the mix): proxy names or scores:FILE (a .npy/.npz of true "
                        "memorization scores in the official training order)")
    p.add_argument("--methods", nargs="+", default=None,
                   help="subset of: scrub neggrad_plus rum_scrub rum_neggrad_plus (default: all four)")
    p.add_argument("--forget", choices=FORGET_KINDS, default=None,
                   help="forget-set kind of each request (class: one whole class per request)")
    p.add_argument("--forget-classes", type=int_list, default=tuple(range(10)), metavar="C[,C...]",
                   help="classes for --forget class, one per request, in order (default 0,...,9)")
    p.add_argument("--data-dir", default=None, help="folder holding the dataset files")
    p.add_argument("--storage", default="runs", help="root folder of studies (default ./runs)")
    p.add_argument("--store", default=None, help="artifact store (default STORAGE/artifacts, shared with searches)")
    p.add_argument("--name", default=None, help="study name (default study-<preset>-<date>); an existing one resumes")
    p.add_argument("--address", default=None, help="Ray cluster to join (auto or HOST:PORT); default a local Ray")
    p.add_argument("--cpus-per-task", type=float, default=1, help="CPUs per cell task (default 1)")
    p.add_argument("--gpus-per-task", type=float, default=None,
                   help="GPU fraction per cell task (default 0.25 with GPUs, else 0)")
    return p


def plan_cells(a, preset: dict) -> tuple[list[Cell], dict]:
    from unlearn_core.data import dataset_names
    from unlearn_core.models import model_names
    from unlearn_core.proxies import absolute_proxy, check_proxy

    datasets = a.dataset or preset["datasets"]
    archs = a.arch or preset["archs"]
    for d in datasets:
        if d not in dataset_names():
            raise ConfigError(f"unknown dataset {d!r}; valid: {', '.join(dataset_names())}")
    for x in archs:
        if x not in model_names():
            raise ConfigError(f"unknown architecture {x!r}; valid: {', '.join(model_names())}")
    proxies = [absolute_proxy(px) for px in (a.proxies or preset["proxies"])]
    for px in proxies:
        check_proxy(px)  # one ConfigError line (main prints it)
    methods = a.methods or preset.get("methods") or ["scrub", "neggrad_plus", "rum_scrub", "rum_neggrad_plus"]
    valid = {"scrub", "neggrad_plus", "rum_scrub", "rum_neggrad_plus"}
    bad = [m for m in methods if m not in valid]
    if bad:
        raise ConfigError(f"unknown method(s) {', '.join(bad)}; valid: {', '.join(sorted(valid))}")
    forget = a.forget or preset["forget"]
    cells = []
    for d in datasets:
        for x in archs:
            for s in (a.seeds or preset["seeds"]):
                for m in methods:
                    rum = m.startswith("rum_")
                    base = m[4:] if rum else m
                    # forget sets come from a proxy's mix: each proxy is its own setting; random/class: one
                    for px in (proxies if (forget == "mix" or rum) else [None]):
                        cells.append(Cell(d, x, s, base, rum, px or ""))
    settings = {"datasets": datasets, "archs": archs, "seeds": a.seeds or preset["seeds"],
                "requests": a.requests or preset["requests"], "forget": forget, "proxies": proxies, "methods": methods}
    return cells, settings


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return run_study(a)
    except UnlearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run_study(a) -> int:
    import ray

    from unlearn_core.data import load_dataset
    from unlearn_core.environment import environment
    from unlearn_core.proxies import check_proxy
    from unlearn_core.spec import ExperimentSpec

    from .files import write_json
    from .progress import as_completed
    from .report import make_report
    from .settings import check_address

    preset = PRESETS[a.preset]
    configs = None
    if a.configs:
        try:
            with open(a.configs) as f:
                configs = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"--configs: cannot read {a.configs} ({e})") from None
        for c in configs:
            if not str(c.get("algorithm", "")) in ("scrub", "neggrad_plus", "rum_scrub", "rum_neggrad_plus", "rum"):
                raise ConfigError(f"--configs: unknown algorithm {c.get('algorithm')!r} in {a.configs}")
    cells, settings = plan_cells(a, preset)
    requests = settings["requests"]
    if requests < 1:
        raise ConfigError(f"--requests must be >= 1, got {requests}")
    if a.address:
        check_address(a.address)
    root = os.path.abspath(a.storage)
    name = a.name or f"study-{a.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    exp = os.path.join(root, name)
    store = a.store or os.path.join(root, "artifacts")
    split_seed = ExperimentSpec().split_seed
    datasets = {d: load_dataset(d, a.data_dir, split_seed) for d in settings["datasets"]}  # missing data fails here
    for px in settings["proxies"]:
        for d in datasets.values():
            check_proxy(px, d)  # a scores file: one score per example of each dataset's official training set
    classes = tuple(a.forget_classes)

    def spec_of(c: Cell) -> ExperimentSpec:
        return ExperimentSpec(dataset=c.dataset, arch=c.arch, width=preset["width"], seed=c.seed,
                              forget=settings["forget"], forget_size=preset["forget_size"], forget_classes=classes,
                              proxy=c.proxy or "confidence", data_dir=a.data_dir, store=store,
                              train_epochs=preset["train_epochs"])

    # Every parameter set is checked before Ray starts: a bad config is one line, not a failed task.
    params = {c: method_params(c.base, c.rum, c.dataset, c.arch, configs, preset["epochs_scale"]) for c in cells}
    todo = [c for c in cells if not os.path.exists(os.path.join(exp, "runs", c.name("sequential") + ".json"))]
    print(f"study {exp}: {len(cells)} cells, {len(cells) - len(todo)} already done", flush=True)
    if todo:  # a finished study only rewrites its report: no Ray
        ray.init(address=a.address or "local", include_dashboard=False, log_to_driver=False)
        gpus = a.gpus_per_task if a.gpus_per_task is not None else (0.25 if ray.cluster_resources().get("GPU") else 0)
        os.makedirs(os.path.join(exp, "runs"), exist_ok=True)
        if not os.path.exists(os.path.join(exp, "study.json")):
            write_json(os.path.join(exp, "study.json"),
                       {"preset": a.preset, "settings": settings, "store": store, "configs": a.configs,
                        "env": environment(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1)
        task = ray.remote(_run_cell).options(num_cpus=a.cpus_per_task, num_gpus=gpus, max_retries=2)
        data_refs = {name: ray.put(d) for name, d in datasets.items()}  # one object-store copy per dataset
        jobs = {task.remote(c, spec_of(c), data_refs[c.dataset], params[c], requests, a.cpus_per_task): c
                for c in todo}
        done = 0
        for c, outs in as_completed(jobs):
            for out in outs:
                row = {"dataset": c.dataset, "arch": c.arch, "seed": c.seed, "method": c.method, "mode": out["mode"],
                       "record": out["record"]}
                write_json(os.path.join(exp, "runs", c.name(out["mode"]) + ".json"), row)
            done += 1
            r = row["record"]
            print(f"  {done}/{len(todo)}: {c.method} {c.dataset}/{c.arch} seed {c.seed}: "
                  f"ToW {r['tow'] if r['tow'] is None else round(r['tow'], 4)}", flush=True)
        ray.shutdown()
    print(make_report(exp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
