"""`SearchSettings`: the validated, frozen settings of one search (stored as search.json; --resume reads them back).

The search CLI is made from it: every field with `flag(...)` metadata is a `python -m tuner.search` option with
the field's default and help (`tuner.search.build_parser`), and the experiment fields' defaults feed
`unlearn_core.cli_args.add_experiment_args`, so no default is written twice.

Everything that can be checked before Ray starts and before any folder is created is checked here: names,
counts, sizes against the dataset, the storage path being writable, the Ray address answering, the --points
file fitting the space. A bad value is one `ConfigError` line.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Optional

from unlearn_core.errors import ConfigError
from unlearn_core.spec import ExperimentSpec

from .connect import check_address, cluster_address, where
from .names import check_name
from .study_storage import check_url, default_url

DEFAULT_STORAGE = "runs"
SEARCH_OBJECTIVES = ("tow", "tow_mia", "both")
GPU_SHARE = 0.25             # GPU fraction of a trial (or a study's task) when the cluster has GPUs: 4 share one
ALL_PAPER_ROWS_FROM = 16     # with at least this many trials, every paper row of the space is tried first
PAPER_FINAL_SEEDS = 5        # the paper's seeds per config
FINAL_SEEDS = {"digits": 3}  # fewer where every dataset is small: what fits the default search's 3-minute budget


def flag(group: str, help: str, **argparse_kw) -> dict:
    """Field metadata: the setting is the search CLI's `--NAME` (the field's name, dashes for underscores), in
    --help's `group`, with the field's default. `argparse_kw` go to `add_argument`, but for two: `default`
    replaces the field's where the flag's value is not the setting's own (a count of seeds, a file of points),
    and `shown` is what --help says the default is where the value alone does not tell."""
    return {"cli": {"group": group, "help": help, **argparse_kw}}


def default_final_seeds(datasets) -> int:
    """How many fresh seeds the finals use: the paper's 5, or FINAL_SEEDS' when every dataset has fewer there."""
    return max(FINAL_SEEDS.get(d, PAPER_FINAL_SEEDS) for d in datasets)


def final_seeds_rule() -> str:
    """`default_final_seeds` in words, for --help: '3 when every dataset is digits, else 5 as the paper'."""
    fewer = "; ".join(f"{n} when every dataset is {d}" for d, n in FINAL_SEEDS.items())
    return f"{fewer}, else {PAPER_FINAL_SEEDS} as the paper"


def fresh_seeds(search_seed: int, n: int) -> tuple[int, ...]:
    """n seeds other than the search seed (0, 1, 2, ... skipping it): finals never repeat a search run."""
    return tuple(x for x in range(n + 1) if x != search_seed)[:n]


RESOURCES = "resources and cluster"


@dataclass(frozen=True)
class SearchSettings:
    algorithm: str                       # a search space name (scrub, neggrad_plus, rum_scrub, ...)
    exp_dir: str                         # STORAGE/NAME: every output of the search
    store: str                           # artifact store (originals, retrains, proxies)
    optuna_url: str
    # The experiment (unlearn_core.cli_args' flags): the spec's defaults but for the forget set, the paper's
    # memorization mix (a random set is so easy that every config scores about the same), and the model that
    # ranks requests 2..k: the retrained one, so every config sees the same sets and retrains.
    datasets: tuple[str, ...] = (ExperimentSpec.dataset,)
    archs: tuple[str, ...] = (ExperimentSpec.arch,)
    width: Optional[float] = None
    data_dir: Optional[str] = None
    split_seed: int = ExperimentSpec.split_seed
    train_epochs: Optional[int] = None
    forget: str = "mix"
    forget_size: Optional[int] = None
    forget_classes: tuple[int, ...] = ExperimentSpec.forget_classes
    proxy: str = ExperimentSpec.proxy
    requests: int = 1
    ranking_model: str = "retrain"
    device: Optional[str] = None
    precision: Optional[str] = None      # None: the trials' device's (records key on it as resolved there)
    memory_format: Optional[str] = None
    download: bool = False
    # The search
    objective: str = field(default="both", metadata=flag(
        "search", "maximize ToW, ToW-MIA, or both (multi-objective, Pareto front)", choices=SEARCH_OBJECTIVES))
    num_samples: int = field(default=16, metadata=flag(
        "search", f"trials per (dataset, arch); from {ALL_PAPER_ROWS_FROM} on, every paper row is tried first"))
    search_seed: int = field(default=ExperimentSpec.seed, metadata=flag(  # the model seed every trial uses
        "search", "model seed of every search trial (original, retrain, forget set, unlearning)"))
    final_seeds: tuple[int, ...] = field(  # fresh seeds of the final re-runs, never the search seed
        default=fresh_seeds(ExperimentSpec.seed, default_final_seeds(datasets)), metadata=flag(
            "search", "fresh seeds each finalist and the paper's config are re-run on, never the search seed",
            type=int, metavar="N", default=None, shown=final_seeds_rule()))
    top_k: int = field(default=2, metadata=flag("search", "finalists per (dataset, arch), besides the paper's config"))
    sampler_seed: int = field(default=0, metadata=flag("search", "seed of the Optuna sampler"))
    points: tuple = field(default=(), metadata=flag(  # --points' configs, kept here: --resume needs no file
        "search", "extra configs to evaluate first: a JSON list of points in the space's suggested names, "
                  "e.g. [{\"lr\": 0.01, \"epochs\": 3, ...}] (tried before the paper's config)",
        default=None, metavar="FILE.json", shown="none"))
    # Resources and cluster
    gpus_per_trial: Optional[float] = field(default=None, metadata=flag(
        RESOURCES, f"GPU fraction per trial, e.g. {GPU_SHARE} = {round(1 / GPU_SHARE)} trials share a GPU",
        type=float, shown=f"{GPU_SHARE} if the cluster has GPUs, else 0"))
    cpus_per_trial: float = field(default=1.0, metadata=flag(RESOURCES, "CPUs per trial"))
    max_concurrent: Optional[int] = field(default=None, metadata=flag(
        RESOURCES, "most trials running at once", type=int, shown="what the cluster's CPUs/GPUs allow"))
    address: Optional[str] = field(default=None, metadata=flag(
        RESOURCES, "Ray cluster to join: auto or HOST:PORT", shown="RAY_ADDRESS if set, else a new local Ray"))
    local_gpus: Optional[float] = field(default=None, metadata=flag(
        RESOURCES, "logical GPUs of the local Ray started without --address; lets fractional-GPU scheduling be "
                   "tried on a CPU-only machine", type=float, shown="detected"))
    no_dashboard: bool = field(default=False, metadata=flag(
        RESOURCES, "do not start the Ray dashboard (local Ray only)"))
    max_failures: int = field(default=2, metadata=flag(RESOURCES, "retries of a failed trial (from its saved state)"))
    # Outputs
    storage: str = field(default=DEFAULT_STORAGE, metadata=flag(
        "outputs", "experiment root: a folder or a URI (s3://, gs://, an NFS path)"))
    resume: bool = field(default=False, metadata=flag("outputs", "continue the interrupted experiment --name"))

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(d, a) for d in self.datasets for a in self.archs]

    @property
    def name(self) -> str:
        return os.path.basename(self.exp_dir.rstrip("/"))

    @property
    def needs_proxy(self) -> bool:
        return self.algorithm.startswith("rum") or self.forget == "mix"

    def spec(self, dataset: str, arch: str, seed: int) -> ExperimentSpec:
        """The experiment of one (dataset, arch, seed) of this search."""
        return ExperimentSpec(dataset=dataset, arch=arch, width=self.width, seed=seed, split_seed=self.split_seed,
                              forget=self.forget, forget_size=self.forget_size, forget_classes=self.forget_classes,
                              proxy=self.proxy, data_dir=self.data_dir, store=self.store, device=self.device,
                              train_epochs=self.train_epochs, precision=self.precision,
                              memory_format=self.memory_format)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "SearchSettings":
        """Settings from search.json; one written before `selection` was called `ranking_model` reads too."""
        known = {f.name for f in dataclasses.fields(cls)}
        tuples = {"datasets", "archs", "forget_classes", "final_seeds", "points"}
        d = {("ranking_model" if k == "selection" else k): v for k, v in d.items()}
        return cls(**{k: (tuple(v) if k in tuples else v) for k, v in d.items() if k in known})


def defaults() -> dict:
    """Field name → default, for every field that has one."""
    return {f.name: f.default for f in dataclasses.fields(SearchSettings) if f.default is not dataclasses.MISSING}


def experiment_defaults() -> dict:
    """The defaults of `add_experiment_args`' flags in a search (flag dest → value)."""
    d = defaults()
    return {**d, "dataset": list(d["datasets"]), "arch": list(d["archs"]), "forget_classes": None}


def load_points(path: str, algorithm: str) -> tuple:
    """The `--points` file as points of `algorithm`'s space (each checked by replaying the space)."""
    import search_spaces

    try:
        with open(path) as f:
            points = json.load(f)
    except OSError as e:
        raise ConfigError(f"--points: cannot read {path} ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"--points: {path} is not JSON ({e})") from None
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise ConfigError(f"--points: {path} must hold a JSON list of objects (one per config)")
    for i, point in enumerate(points):
        try:
            search_spaces.to_config_params(algorithm, point)
        except ValueError as e:
            raise ConfigError(f"--points: point {i} of {path} does not fit the {algorithm} space: {e}") from None
    return tuple(points)


def check_storage(root: str, flag: str = "--storage") -> None:
    """The storage root must be usable before anything starts: a local folder creatable and writable (checked
    without leaving anything behind); a URI's fsspec driver installed (the extra named) and its bucket there
    (a typo never creates one)."""
    if "://" not in root:
        probe = root
        while not os.path.exists(probe):
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
        if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
            raise ConfigError(f"{flag} {root}: {probe} is not a writable folder")
        return
    import fsspec

    scheme = root.split("://", 1)[0]
    try:
        fs, path = fsspec.core.url_to_fs(root)
    except ImportError:
        extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}.get(scheme)
        how = f"pip install 'unlearn-search[{extra}]'" if extra else f"install fsspec's driver for {scheme}://"
        raise ConfigError(f"{flag} {root}: no fsspec driver for {scheme}:// on this machine ({how})") from None
    except ValueError as e:
        raise ConfigError(f"{flag} {root}: {e}") from None
    bucket = path.split("/", 1)[0]
    if scheme in ("s3", "s3a", "gs", "gcs"):
        try:
            there = fs.exists(bucket)
        except Exception as e:  # noqa: BLE001  credentials, endpoint, network: one line saying why
            raise ConfigError(f"{flag} {root}: cannot reach bucket {bucket!r}: {type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]}") from None
        if not there:
            raise ConfigError(f"{flag} {root}: bucket {bucket!r} does not exist (create it first; a search "
                              "never creates buckets)")


def _check_numbers(a) -> None:
    if a.num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {a.num_samples}")
    g = a.gpus_per_trial
    if g is not None and (g < 0 or (g > 1 and not float(g).is_integer())):
        raise ConfigError(f"--gpus-per-trial must be a fraction in [0, 1] or a whole number, got {g}")
    if a.cpus_per_trial <= 0:
        raise ConfigError(f"--cpus-per-trial must be > 0, got {a.cpus_per_trial}")
    if (a.final_seeds is not None and a.final_seeds < 2) or a.top_k < 0:
        raise ConfigError("--final-seeds must be >= 2 (an interval needs two runs) and --top-k >= 0")
    if a.max_concurrent is not None and a.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent must be >= 1, got {a.max_concurrent}")
    if a.max_failures < 0:
        raise ConfigError(f"--max-failures must be >= 0, got {a.max_failures}")


def check_experiment(s: SearchSettings, datasets: dict) -> None:
    """Checks that need the data or the machine, before Ray starts: GPUs asked of a local Ray, and the run
    driver's own checks on every (dataset, arch)."""
    import search_spaces
    from unlearn_core.proxies import check_proxy
    from unlearn_core.run_check import check, check_sizes

    space = search_spaces.get_space(s.algorithm)
    params = search_spaces.to_config_params(space, search_spaces.paper_config(s.algorithm, *s.pairs[0]))
    if not cluster_address(s.address) and (s.gpus_per_trial or 0) > 0:  # a local Ray: this machine's GPUs
        import torch

        local = s.local_gpus if s.local_gpus is not None else torch.cuda.device_count()
        if not local:
            raise ConfigError(f"--gpus-per-trial {s.gpus_per_trial:g} asks for GPUs, but this machine has none "
                              "(a local Ray; --local-gpus N declares logical ones)")
    for dataset, arch in s.pairs:
        spec = s.spec(dataset, arch, s.search_seed)
        m = check(spec, space.algorithm, params, requests=s.requests, ranking_model=s.ranking_model)
        check_sizes(spec, len(datasets[dataset].train), datasets[dataset].train.y, m, s.requests)
        check_proxy(spec.proxy, datasets[dataset])  # scores:FILE: one score per official training example


def from_args(a) -> SearchSettings:
    """Validate the parsed command line and resolve the experiment folder; nothing is written here."""
    import fsspec

    from unlearn_core.cli_args import check_device, check_forget_args

    _check_numbers(a)
    check_forget_args(a)
    check_device(a.device)
    address = cluster_address(a.address)
    if address:
        check_address(address, where(a.address))
    if a.name:
        check_name(a.name)
    elif a.resume:
        raise ConfigError("--resume needs --name of the experiment to continue")
    name = a.name or f"{a.algorithm}-{time.strftime('%Y%m%d-%H%M%S')}"
    root = os.path.abspath(os.path.expanduser(a.storage)) if "://" not in a.storage else a.storage.rstrip("/")
    check_storage(root)
    if a.optuna_storage:
        check_url(a.optuna_storage)
    exp_dir = f"{root}/{name}"
    fs, path = fsspec.core.url_to_fs(exp_dir)
    meta = f"{path}/search.json"
    if a.resume:
        if not fs.exists(meta):
            raise ConfigError(f"--resume: no experiment {name!r} under {root} (no search.json)")
        with fs.open(meta) as f:
            saved = SearchSettings.from_json(json.load(f)["settings"])
        if saved.algorithm != a.algorithm:
            raise ConfigError(f"--resume: experiment {name!r} searched {saved.algorithm}, not {a.algorithm}")
        if a.optuna_storage and a.optuna_storage != saved.optuna_url:  # never silently ignored
            raise ConfigError(f"--resume: experiment {name!r} keeps its Optuna study in {saved.optuna_url}; "
                              "--optuna-storage cannot move it (leave the flag out)")
        return dataclasses.replace(saved, resume=True, address=a.address)
    if fs.exists(meta):  # the quick check; claiming the name (tuner.claim) is the atomic one
        raise ConfigError(f"experiment {name!r} already exists under {root}; use --resume or another --name")
    optuna_url = a.optuna_storage or default_url(exp_dir)
    # Flags named as their setting carry over as they are; the rest are resolved here.
    same = {f.name: getattr(a, f.name) for f in dataclasses.fields(SearchSettings) if hasattr(a, f.name)}
    return SearchSettings(**{
        **same, "datasets": tuple(a.dataset), "archs": tuple(a.arch), "exp_dir": exp_dir, "optuna_url": optuna_url,
        "store": a.store or f"{root}/artifacts", "cpus_per_trial": float(a.cpus_per_trial),
        "forget_classes": tuple(a.forget_classes) if a.forget_classes is not None else defaults()["forget_classes"],
        "final_seeds": fresh_seeds(a.search_seed, a.final_seeds or default_final_seeds(a.dataset)),
        "points": load_points(a.points, a.algorithm) if a.points else ()})
