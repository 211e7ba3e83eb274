"""`python -m tuner.study`: run a grid of methods × datasets × archs × seeds × k sequential requests, then report.

Every cell runs as a Ray task sharing the artifact store (originals and retrains are built once and reused by
every method of the same seed); each finished cell is written to `runs/<cell>.json`, so re-running the same
command with `--name` resumes and only runs what is missing. The study ends with `tuner.report`'s figures
and table.

Methods, per forget-set proxy: each flat search space's algorithm run alone (vanilla SCRUB, NegGrad+, ...) and
RUM built on one where its `rum_<base>` space is registered (three memorization subsets, low → mid → high);
`method_names()` reads them from the registry, the presets say which run. Beyond the paper (its §6.3 future
work): every vanilla method also runs **one-shot** — forgetting the union of the k requests in a single step,
against the same retrained model as request k — so one-shot and sequential sit side by side; `--forget class`
makes each request a whole class; and every table carries the unlearning speed-up over retraining.

Presets: `paper` is the paper's grid (Tables C.1–C.4: CIFAR-10/100 × ResNet-18/VGG-16-bn, 5 seeds, 5 requests
of 3,000 by the mix of each of the five proxies, the paper's configs — what the paper ran, see
`search_spaces`); `smoke` is a digits-sized version that runs in CI in a few minutes. The experiment flags are
`unlearn_core.cli_args`' own; those a preset sets (OVERRIDES) default to the preset's value.

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

# None: what a single run would use (the dataset's width, recipe and forget-set size).
PRESETS = {
    "paper": {"datasets": ["cifar10", "cifar100"], "archs": ["resnet18", "vgg16_bn"], "seeds": [0, 1, 2, 3, 4],
              "requests": 5, "forget": "mix", "proxies": list(PAPER_PROXIES), "width": None, "train_epochs": None,
              "forget_size": None, "epochs_scale": None, "forget_classes": tuple(range(10)),
              "ranking_model": "current", "methods": ["scrub", "neggrad_plus", "rum_scrub", "rum_neggrad_plus"]},
    # digits, two seeds so intervals exist, two requests, one proxy, vanilla and RUM; short runs so CI stays fast
    "smoke": {"datasets": ["digits"], "archs": ["resnet18"], "seeds": [0, 1], "requests": 2, "forget": "mix",
              "proxies": ["confidence"], "width": 0.125, "train_epochs": 3, "forget_size": 60, "epochs_scale": 0.3,
              "forget_classes": tuple(range(10)), "ranking_model": "current",
              "methods": ["scrub", "neggrad_plus", "rum_neggrad_plus"]},
}
DEFAULT_PRESET = "smoke"
# Flags that override a preset's value (flag dest → preset key); their default None means "the preset's".
OVERRIDES = {"dataset": "datasets", "arch": "archs", "seeds": "seeds", "requests": "requests", "forget": "forget",
             "forget_classes": "forget_classes", "forget_size": "forget_size", "proxies": "proxies",
             "methods": "methods", "width": "width", "train_epochs": "train_epochs", "ranking_model": "ranking_model"}


def method_names() -> list[str]:
    """The study's methods, from the registered spaces: every flat space run alone, and RUM built on one of
    them where its space is registered (`rum_<base>`)."""
    import search_spaces

    names = search_spaces.space_names()
    flat = [n for n in names if search_spaces.get_space(n).kind == "flat"]
    return flat + [n for n in names if n.startswith("rum_") and n[len("rum_"):] in flat]


def preset_text(key: str) -> str:
    """What --help says a preset override defaults to: 'the preset's: paper: cifar10 cifar100; smoke: digits'."""
    from unlearn_core.cli_args import shown

    def value(v) -> str:
        return "the dataset's" if v is None else shown(v)

    return "the preset's: " + "; ".join(f"{name}: {value(p[key])}" for name, p in sorted(PRESETS.items()))


def method_params(base: str, rum: bool, dataset: str, arch: str, configs: Optional[list],
                  scale: Optional[float]) -> dict:
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


def _run_cell(cell: Cell, spec, dataset_obj, params: dict, requests: int, ranking_model: str,
              cpus: float) -> list[dict]:
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
    rec = start(spec, algorithm, p, ws, requests=requests, ranking_model=ranking_model,
                on_request=lambda r, model, req: sets.append(np.asarray(req.forget_ids))).run()
    out = [{"mode": "sequential", "record": rec}]
    if not cell.rum and len(sets) == requests and requests > 1:
        one = start(spec, algorithm, params, ws, forget_ids=np.concatenate(sets)).run()
        one["forgotten"] = int(sum(map(len, sets)))  # one-shot: the union of the k requests, one request
        out.append({"mode": "one-shot", "record": one})
    return out


def build_parser() -> argparse.ArgumentParser:
    from unlearn_core.cli_args import Parser, add_experiment_args, add_flag

    from .settings import DEFAULT_STORAGE, GPU_SHARE

    p = Parser(prog="python -m tuner.study",
               description="Run a grid of unlearning methods over sequential deletion requests as Ray tasks, then "
                           "write the report (figures + tables).")
    add_flag(p, "--preset", "paper: the paper's grid (Tables C.1-C.4); smoke: a digits-sized version for CI; the "
                            "flags below override a preset's values", DEFAULT_PRESET, choices=sorted(PRESETS))
    add_flag(p, "--configs", "best_configs.json of a search: its winners replace the paper's configs where they "
                             "match", said="the paper's configs")
    # The experiment flags as everywhere; those a preset sets default to the preset's (None), --proxies below.
    add_experiment_args(p, {**{dest: None for dest in OVERRIDES}, "store": None}, several=True, omit=("proxy",),
                        texts={**{dest: preset_text(key) for dest, key in OVERRIDES.items()},
                               "store": "STORAGE/artifacts, shared with searches"})
    g = p.add_argument_group("study")
    add_flag(g, "--seeds", "model seeds", said=preset_text("seeds"), type=int, nargs="+")
    add_flag(g, "--proxies", "memorization proxies of RUM and the mix, one setting each: proxy names or scores:FILE "
                             "(a .npy/.npz of true memorization scores in the official training order)",
             said=preset_text("proxies"), nargs="+", metavar="PROXY")
    add_flag(g, "--methods", f"methods, of: {' '.join(method_names())}", said=preset_text("methods"), nargs="+",
             choices=method_names(), metavar="METHOD")
    g = p.add_argument_group("outputs and resources")
    add_flag(g, "--storage", "root folder of studies", DEFAULT_STORAGE)
    add_flag(g, "--name", "study name; an existing one resumes", said="study-<preset>-<date>")
    add_flag(g, "--address", "Ray cluster to join (auto or HOST:PORT)", said="a new local Ray")
    add_flag(g, "--cpus-per-task", "CPUs per cell task", 1.0, type=float)
    add_flag(g, "--gpus-per-task", "GPU fraction per cell task", said=f"{GPU_SHARE} with GPUs, else 0", type=float)
    return p


def resolve(a, preset: dict) -> dict:
    """The study's settings: each override flag's value, else the preset's."""
    return {key: (getattr(a, dest) if getattr(a, dest) is not None else preset.get(key))
            for dest, key in OVERRIDES.items()}


def plan_cells(a, preset: dict) -> tuple[list[Cell], dict]:
    """The study's cells and settings (each override flag's value, else the preset's), checked before Ray starts:
    a bad name is one ConfigError line."""
    from types import SimpleNamespace

    from unlearn_core.cli_args import check_forget_args
    from unlearn_core.data import dataset_names
    from unlearn_core.models import model_names
    from unlearn_core.proxies import absolute_proxy, check_proxy

    settings = resolve(a, preset)
    for d in settings["datasets"]:
        if d not in dataset_names():
            raise ConfigError(f"unknown dataset {d!r}; valid: {', '.join(dataset_names())}")
    for x in settings["archs"]:
        if x not in model_names():
            raise ConfigError(f"unknown architecture {x!r}; valid: {', '.join(model_names())}")
    bad_seeds = [x for x in settings["seeds"] if x < 0]
    if bad_seeds or not settings["seeds"]:
        raise ConfigError(f"--seeds must be model seeds >= 0, got {bad_seeds or 'none'}")
    settings["proxies"] = proxies = [absolute_proxy(px) for px in settings["proxies"]]
    for px in proxies:
        check_proxy(px)  # one ConfigError line (main prints it)
    bad = [m for m in settings["methods"] if m not in method_names()]
    if bad:
        raise ConfigError(f"unknown method(s) {', '.join(bad)}; valid: {', '.join(method_names())}")
    # the flags as given (a preset's forget-set size is no user's --forget-size), against the forget set that runs
    check_forget_args(SimpleNamespace(forget=settings["forget"], forget_classes=a.forget_classes,
                                      forget_size=a.forget_size, requests=settings["requests"]))
    cells = []
    for d in settings["datasets"]:
        for x in settings["archs"]:
            for s in settings["seeds"]:
                for m in settings["methods"]:
                    rum = m.startswith("rum_")
                    base = m[len("rum_"):] if rum else m
                    # forget sets come from a proxy's mix: each proxy is its own setting; random/class: one
                    for px in (proxies if (settings["forget"] == "mix" or rum) else [None]):
                        cells.append(Cell(d, x, s, base, rum, px or ""))
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

    import search_spaces
    from unlearn_core.cli_args import check_device
    from unlearn_core.data import load_dataset
    from unlearn_core.environment import environment
    from unlearn_core.proxies import check_proxy
    from unlearn_core.spec import ExperimentSpec

    from .files import write_json
    from .progress import as_completed
    from .report import make_report
    from .connect import check_address, cluster_address, connect, where
    from .names import check_name
    from .settings import GPU_SHARE
    from .task_names import study_task

    preset = PRESETS[a.preset]
    configs = None
    if a.configs:
        try:
            with open(a.configs) as f:
                configs = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"--configs: cannot read {a.configs} ({e})") from None
        for c in configs:
            if str(c.get("algorithm", "")) not in search_spaces.space_names():
                raise ConfigError(f"--configs: unknown algorithm {c.get('algorithm')!r} in {a.configs}")
    cells, settings = plan_cells(a, preset)
    requests = settings["requests"]
    check_device(a.device)
    address = cluster_address(a.address)
    if address:
        check_address(address, where(a.address))
    root = os.path.abspath(os.path.expanduser(a.storage))
    name = check_name(a.name) if a.name else f"study-{a.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    exp = os.path.join(root, name)
    store = a.store or os.path.join(root, "artifacts")
    datasets = {d: load_dataset(d, a.data_dir, a.split_seed, download=a.download)  # missing data fails here
                for d in settings["datasets"]}
    for px in settings["proxies"]:
        for d in datasets.values():
            check_proxy(px, d)  # a scores file: one score per example of each dataset's official training set
    def spec_of(c: Cell) -> ExperimentSpec:
        return ExperimentSpec(dataset=c.dataset, arch=c.arch, width=settings["width"], seed=c.seed,
                              split_seed=a.split_seed, forget=settings["forget"], forget_size=settings["forget_size"],
                              forget_classes=tuple(settings["forget_classes"]), proxy=c.proxy or "confidence",
                              data_dir=a.data_dir, store=store, device=a.device, train_epochs=settings["train_epochs"],
                              precision=a.precision, memory_format=a.memory_format)

    # Every parameter set is checked before Ray starts: a bad config is one line, not a failed task.
    params = {c: method_params(c.base, c.rum, c.dataset, c.arch, configs, preset["epochs_scale"]) for c in cells}
    todo = [c for c in cells if not os.path.exists(os.path.join(exp, "runs", c.name("sequential") + ".json"))]
    print(f"study {exp}: {len(cells)} cells, {len(cells) - len(todo)} already done", flush=True)
    if todo:  # a finished study only rewrites its report: no Ray
        connect(address, dashboard=False)
        gpus = a.gpus_per_task
        if gpus is None:
            gpus = GPU_SHARE if ray.cluster_resources().get("GPU") else 0
        os.makedirs(os.path.join(exp, "runs"), exist_ok=True)
        if not os.path.exists(os.path.join(exp, "study.json")):
            write_json(os.path.join(exp, "study.json"),
                       {"preset": a.preset, "settings": settings, "store": store, "configs": a.configs,
                        "env": environment(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1)
        task = ray.remote(num_cpus=a.cpus_per_task, num_gpus=gpus, max_retries=2)(_run_cell)
        data_refs = {name: ray.put(d) for name, d in datasets.items()}  # one object-store copy per dataset
        jobs = {task.options(name=study_task(c)).remote(c, spec_of(c), data_refs[c.dataset], params[c], requests,
                                                        settings["ranking_model"], a.cpus_per_task): c
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
    from unlearn_core.errors import one_line_warnings

    one_line_warnings()
    sys.exit(main())
