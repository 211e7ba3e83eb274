"""`python -m tuner.search <algorithm>`: the hyperparameter-search service.

For each (dataset, arch): build originals + retrains once (prepare stage, Ray tasks), then run Ray Tune
trials with an Optuna define-by-run space (warm-started with the paper's configs, study in Optuna storage
under the experiment folder) and ASHA over unlearning epochs, then re-run the top configs on more seeds and
write `best_configs.{json,md}`, `trials.csv` and the Optuna study. With no options it runs a small search on
scikit-learn's bundled digits on a local Ray and finishes in a few minutes on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import sys
import time
from typing import Optional, Sequence

from unlearn_core.errors import ConfigError, UnlearnError

ALGORITHMS = ("scrub", "neggrad_plus", "rum_scrub", "rum_neggrad_plus", "rum")
DEFAULT_STORAGE = "runs"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: a bad option gives `prog: error: ...` alone, not the usage block first,
    like every other error of this CLI (one line on stderr, exit 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from unlearn_core.data import dataset_names
    from unlearn_core.models import model_names

    p = _Parser(
        prog="python -m tuner.search",
        description="Search unlearning hyperparameters that make an unlearned model behave like one retrained "
                    "from scratch (maximize ToW / ToW-MIA), as Ray Tune trials with Optuna search spaces.")
    p.add_argument("algorithm", choices=ALGORITHMS, help="search space / algorithm to tune")
    p.add_argument("--dataset", nargs="+", default=["digits"], choices=dataset_names(), metavar="DATASET",
                   help=f"one or more of {', '.join(dataset_names())} (default: digits, bundled, no download)")
    p.add_argument("--arch", nargs="+", default=["resnet18"], choices=model_names(), metavar="ARCH",
                   help=f"one or more of {', '.join(model_names())} (default: resnet18)")
    p.add_argument("--width", type=float, default=None,
                   help="channel multiplier of the models (default: 0.25 on digits, 1.0 otherwise)")
    p.add_argument("--data-dir", default=None, help="folder holding the dataset files (CIFAR / ImageFolder)")
    p.add_argument("--objective", choices=("tow", "tow_mia", "both"), default="both",
                   help="maximize ToW, ToW-MIA, or both (multi-objective, Pareto front); default both")
    p.add_argument("--num-samples", type=int, default=8, help="trials per (dataset, arch) (default 8)")
    p.add_argument("--gpus-per-trial", type=float, default=None,
                   help="GPU fraction per trial, e.g. 0.25 = 4 trials share a GPU (default: 0.25 if the cluster "
                        "has GPUs, else 0)")
    p.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs per trial (default 1)")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="most trials running at once (default: what the cluster's CPUs/GPUs allow)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="model seeds; search trials use the first, final re-runs use --final-seeds of them "
                        "(extended with 1, 2, ... when fewer are given)")
    p.add_argument("--final-seeds", type=int, default=2, help="seeds each finalist is re-run on (default 2)")
    p.add_argument("--top-k", type=int, default=2, help="finalists per (dataset, arch), besides the paper's config")
    p.add_argument("--forget", choices=("random", "class", "mix"), default="random",
                   help="forget-set kind: random examples, whole class(es), or the memorization mix")
    p.add_argument("--forget-size", type=int, default=None, help="forget-set size (default 3000 on CIFAR, 90 on digits)")
    p.add_argument("--forget-classes", default="0", help="classes to forget with --forget class, e.g. 0,3")
    p.add_argument("--proxy", default="confidence", help="memorization proxy for --forget mix and RUM")
    p.add_argument("--steps", type=int, default=1, help="sequential deletion requests per run (default 1)")
    p.add_argument("--train-epochs", type=int, default=None, help="override the original/retrain recipe's epochs")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join: auto or HOST:PORT (default: start a local Ray)")
    p.add_argument("--local-gpus", type=float, default=None,
                   help="logical GPUs of the local Ray started without --address (default: detected); "
                        "lets fractional-GPU scheduling be tried on a CPU-only machine")
    p.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard (local Ray only)")
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help="experiment root: a folder or a URI (s3://, gs://, an NFS path) (default ./runs)")
    p.add_argument("--store", default=None, help="artifact store root (default: STORAGE/artifacts)")
    p.add_argument("--optuna-storage", default=None,
                   help="Optuna storage URL (default: sqlite under the experiment folder; across nodes use "
                        "postgresql://... or a journal file on NFS)")
    p.add_argument("--name", default=None, help="experiment name (default: <algorithm>-<date-time>)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted experiment --name")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial (from its checkpoint)")
    p.add_argument("--sampler-seed", type=int, default=0, help="seed of the Optuna sampler")
    p.add_argument("--device", default=None, help="torch device for trials (default: cuda when present)")
    p.add_argument("--points", default=None, metavar="FILE.json",
                   help="extra configs to evaluate first: a JSON list of points in the space's suggested names, "
                        "e.g. [{\"lr\": 0.01, \"epochs\": 3, ...}] (tried before the paper's config)")
    return p


def load_points(path: str, algorithm: str) -> list[dict]:
    """The `--points` file as a list of points of `algorithm`'s space (each checked by replaying the space)."""
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
    return points


def _local_path(storage: str) -> Optional[str]:
    return None if "://" in storage else os.path.abspath(storage)


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


@dataclasses.dataclass
class Plan:
    """Validated settings of one search (stored as search.json so --resume can check compatibility)."""

    args: dict
    exp_dir: str
    store: str
    optuna_url: str
    pairs: list

    @property
    def local(self) -> bool:
        return "://" not in self.exp_dir


def validate(args) -> None:
    if args.num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {args.num_samples}")
    g = args.gpus_per_trial
    if g is not None and (g < 0 or (g > 1 and not float(g).is_integer())):
        raise ConfigError(f"--gpus-per-trial must be a fraction in [0, 1] or a whole number, got {g}")
    if args.cpus_per_trial <= 0:
        raise ConfigError(f"--cpus-per-trial must be > 0, got {args.cpus_per_trial}")
    if args.final_seeds < 1 or args.top_k < 0:
        raise ConfigError("--final-seeds must be >= 1 and --top-k >= 0")
    if args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent must be >= 1, got {args.max_concurrent}")
    if args.algorithm.startswith("rum") or args.forget == "mix":
        from unlearn_core.proxies import PROXIES

        PROXIES.get(args.proxy)
    if args.address:
        check_address(args.address)
    if args.points:
        args.points = load_points(args.points, args.algorithm)  # stored in search.json: --resume needs no file


def make_plan(args) -> Plan:
    import fsspec

    name = args.name or f"{args.algorithm}-{time.strftime('%Y%m%d-%H%M%S')}"
    root = _local_path(args.storage) or args.storage.rstrip("/")
    exp_dir = f"{root}/{name}"
    fs, path = fsspec.core.url_to_fs(exp_dir)
    meta = f"{path}/search.json"
    if args.resume:
        if not args.name:
            raise ConfigError("--resume needs --name of the experiment to continue")
        if not fs.exists(meta):
            raise ConfigError(f"--resume: no experiment {name!r} under {root} (no search.json)")
        with fs.open(meta) as f:
            saved = json.load(f)
        if saved["args"]["algorithm"] != args.algorithm:
            raise ConfigError(f"--resume: experiment {name!r} searched {saved['args']['algorithm']}, "
                              f"not {args.algorithm}")
        # The saved args say resume=False (the first run's); mark this run as the resume so that run_search
        # keeps the first run's search.json instead of overwriting it.
        return Plan(args={**saved["args"], "resume": True},
                    **{k: saved[k] for k in ("exp_dir", "store", "optuna_url", "pairs")})
    if fs.exists(meta):
        raise ConfigError(f"experiment {name!r} already exists under {root}; use --resume or another --name")
    store = args.store or f"{root}/artifacts"
    if args.optuna_storage:
        optuna_url = args.optuna_storage
    elif "://" not in exp_dir:
        optuna_url = f"sqlite:///{exp_dir}/optuna.db"
    else:
        raise ConfigError("with a remote --storage give --optuna-storage too (e.g. postgresql://... or "
                          "sqlite:////nfs/path/optuna.db): SQLite cannot live in an object store")
    pairs = [(d, a) for d in args.dataset for a in args.arch]
    return Plan(vars(args).copy(), exp_dir, store, optuna_url, pairs)


def write_text(url: str, text: str) -> None:
    """Write a result file atomically (local folders and fsspec URIs alike): readers never see half a file."""
    from unlearn_core.artifacts import write_atomic

    write_atomic(url, text.encode())


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        validate(args)
        plan = make_plan(args)
        from .service import run_search

        return run_search(plan)
    except UnlearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # search_spaces raises plain ValueError for unknown names
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
