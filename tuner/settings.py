"""`SearchSettings`: the validated, frozen settings of one search (stored as search.json; --resume reads them back).

Everything that can be checked before Ray starts and before any folder is created is checked here: names,
counts, sizes against the dataset, the storage path being writable, the Ray address answering, the --points
file fitting the space. A bad value is one `ConfigError` line.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Optional

from unlearn_core.errors import ConfigError
from unlearn_core.spec import ExperimentSpec

DEFAULT_STORAGE = "runs"


@dataclass(frozen=True)
class SearchSettings:
    algorithm: str                       # a search space name (scrub, neggrad_plus, rum_scrub, ...)
    datasets: tuple[str, ...]
    archs: tuple[str, ...]
    exp_dir: str                          # STORAGE/NAME: every output of the search
    store: str                            # artifact store (originals, retrains, proxies)
    optuna_url: str
    width: Optional[float] = None
    data_dir: Optional[str] = None
    split_seed: int = 1
    train_epochs: Optional[int] = None
    forget: str = "mix"
    forget_size: Optional[int] = None
    forget_classes: tuple[int, ...] = (0,)
    proxy: str = "confidence"
    requests: int = 1
    selection: str = "retrain"
    device: Optional[str] = None
    objective: str = "both"
    num_samples: int = 16
    gpus_per_trial: Optional[float] = None
    cpus_per_trial: float = 1.0
    max_concurrent: Optional[int] = None
    search_seed: int = 0                  # the model seed every trial uses
    final_seeds: tuple[int, ...] = (1, 2, 3)  # fresh seeds of the final re-runs, never the search seed
    top_k: int = 2
    sampler_seed: int = 0
    max_failures: int = 2
    address: Optional[str] = None
    local_gpus: Optional[float] = None
    no_dashboard: bool = False
    storage: str = DEFAULT_STORAGE
    points: tuple = ()                    # --points: configs to try first (kept here: --resume needs no file)
    resume: bool = False

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
                              train_epochs=self.train_epochs)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "SearchSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        tuples = {"datasets", "archs", "forget_classes", "final_seeds", "points"}
        return cls(**{k: (tuple(v) if k in tuples else v) for k, v in d.items() if k in known})


def default_final_seeds(datasets) -> int:
    """The paper's 5 seeds on CIFAR; 3 on the embedded default (what fits its 3-minute budget)."""
    return 3 if all(d == "digits" for d in datasets) else 5


def fresh_seeds(search_seed: int, n: int) -> tuple[int, ...]:
    """n seeds other than the search seed (0, 1, 2, ... skipping it): finals never repeat a search run."""
    return tuple(x for x in range(n + 1) if x != search_seed)[:n]


def check_address(address: str) -> None:
    """Fail fast, with one line, when nothing answers at HOST:PORT."""
    if address == "auto":
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address must be auto or HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise ConfigError(f"no Ray cluster answers at {address} ({e.strerror or e}); start one with "
                          f"`ray start --head` or fix --address") from None


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


def check_writable(root: str) -> None:
    """A local storage root must be creatable and writable; checked without leaving anything behind."""
    if "://" in root:
        return
    probe = root
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"--storage {root}: {probe} is not a writable folder")


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
    if not s.address and (s.gpus_per_trial or 0) > 0:  # a local Ray sees this machine's GPUs: check them now
        import torch

        local = s.local_gpus if s.local_gpus is not None else torch.cuda.device_count()
        if not local:
            raise ConfigError(f"--gpus-per-trial {s.gpus_per_trial:g} asks for GPUs, but this machine has none "
                              "(a local Ray; --local-gpus N declares logical ones)")
    for dataset, arch in s.pairs:
        spec = s.spec(dataset, arch, s.search_seed)
        m = check(spec, space.algorithm, params, requests=s.requests, selection=s.selection)
        check_sizes(spec, len(datasets[dataset].train), datasets[dataset].train.y, m, s.requests)
        check_proxy(spec.proxy, datasets[dataset])  # scores:FILE: one score per official training example


def from_args(a) -> SearchSettings:
    """Validate the parsed command line and resolve the experiment folder; nothing is written here."""
    import fsspec

    from unlearn_core.cli_args import check_device, check_forget_args

    _check_numbers(a)
    check_forget_args(a)
    check_device(a.device)
    if a.address:
        check_address(a.address)
    name = a.name or f"{a.algorithm}-{time.strftime('%Y%m%d-%H%M%S')}"
    root = os.path.abspath(a.storage) if "://" not in a.storage else a.storage.rstrip("/")
    check_writable(root)
    exp_dir = f"{root}/{name}"
    fs, path = fsspec.core.url_to_fs(exp_dir)
    meta = f"{path}/search.json"
    if a.resume:
        if not a.name:
            raise ConfigError("--resume needs --name of the experiment to continue")
        if not fs.exists(meta):
            raise ConfigError(f"--resume: no experiment {name!r} under {root} (no search.json)")
        with fs.open(meta) as f:
            saved = SearchSettings.from_json(json.load(f)["settings"])
        if saved.algorithm != a.algorithm:
            raise ConfigError(f"--resume: experiment {name!r} searched {saved.algorithm}, not {a.algorithm}")
        return dataclasses.replace(saved, resume=True)
    if fs.exists(meta):
        raise ConfigError(f"experiment {name!r} already exists under {root}; use --resume or another --name")
    if a.optuna_storage:
        optuna_url = a.optuna_storage
    elif "://" not in exp_dir:
        optuna_url = f"sqlite:///{exp_dir}/optuna.db"
    else:
        raise ConfigError("with a remote --storage give --optuna-storage too (e.g. postgresql://... or "
                          "sqlite:////nfs/path/optuna.db): SQLite cannot live in an object store")
    return SearchSettings(
        algorithm=a.algorithm, datasets=tuple(a.dataset), archs=tuple(a.arch), exp_dir=exp_dir,
        store=a.store or f"{root}/artifacts", optuna_url=optuna_url, width=a.width, data_dir=a.data_dir,
        split_seed=a.split_seed, train_epochs=a.train_epochs, forget=a.forget, forget_size=a.forget_size,
        forget_classes=tuple(a.forget_classes) if a.forget_classes is not None else (0,), proxy=a.proxy,
        requests=a.requests, selection=a.selection or "retrain", device=a.device, objective=a.objective,
        num_samples=a.num_samples, gpus_per_trial=a.gpus_per_trial, cpus_per_trial=float(a.cpus_per_trial),
        max_concurrent=a.max_concurrent, search_seed=a.search_seed,
        final_seeds=fresh_seeds(a.search_seed, a.final_seeds or default_final_seeds(a.dataset)),
        top_k=a.top_k, sampler_seed=a.sampler_seed, max_failures=a.max_failures, address=a.address,
        local_gpus=a.local_gpus, no_dashboard=a.no_dashboard, storage=a.storage,
        points=load_points(a.points, a.algorithm) if a.points else ())
