"""The experiment flags every CLI shares (`python -m unlearn_core run`, `tuner.search`, `tuner.study`).

`add_experiment_args(parser)` adds them — data, model, forget set, proxy, requests, store, device — with
`choices` taken from the registries, and `spec_from_args(args, ...)` turns them into an `ExperimentSpec`,
so the three CLIs speak one vocabulary and check it one way.
"""
from __future__ import annotations

import argparse
from typing import Optional

from .data import dataset_names
from .errors import ConfigError
from .models import model_names
from .proxies import PROXIES, absolute_proxy, check_proxy
from .spec import FORGET_KINDS, SELECTIONS, ExperimentSpec, default_store


def int_list(text: str) -> tuple[int, ...]:
    """'0,3' → (0, 3): an argparse type for class lists."""
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 0,3, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one class, got {text!r}")
    return values


def proxy_arg(text: str) -> str:
    """An argparse type for --proxy: a `PROXIES` name, or scores:FILE with FILE an existing .npy/.npz of finite
    scores (made absolute, so Ray workers with another working folder find it). One line when not."""
    try:
        check_proxy(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(" ".join(str(e).split())) from None
    return absolute_proxy(text)


def add_experiment_args(p: argparse.ArgumentParser, *, several: bool = False, forget_default: str = "random",
                        proxy_default: str = "confidence", store_help: Optional[str] = None) -> None:
    """Add the experiment flags; with `several`, --dataset and --arch take one or more values (a search grid)."""
    n = "+" if several else None
    g = p.add_argument_group("data and model")
    g.add_argument("--dataset", nargs=n, default=["digits"] if several else "digits", choices=dataset_names(),
                   metavar="DATASET", help=f"{'one or more of' if several else 'one of'} {', '.join(dataset_names())} "
                                           "(default digits: scikit-learn's bundled digits, no download)")
    g.add_argument("--arch", nargs=n, default=["resnet18"] if several else "resnet18", choices=model_names(),
                   metavar="ARCH", help=f"architecture, {'one or more of' if several else 'one of'} "
                                        f"{', '.join(model_names())} (default resnet18)")
    g.add_argument("--width", type=float, default=None, metavar="F",
                   help="channel multiplier > 0 (default 0.125 on digits, 1.0 = the reference model otherwise)")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder with the dataset files: for cifar10/cifar100 the folder holding the official "
                        "python-pickle folder (default $UNLEARN_DATA_DIR or ~/.cache/unlearn/data); for "
                        "imagefolder (required) a folder with train/<class>/* and test/<class>/*")
    g.add_argument("--download", action="store_true",
                   help="fetch CIFAR-10/100 through torchvision when its files are missing")
    g.add_argument("--split-seed", type=int, default=1,
                   help="seed of the per-class 90/10 train/validation split (default 1, as the reference)")
    g.add_argument("--train-epochs", type=int, default=None, metavar="N",
                   help="epochs of the original and the retrained model, overriding the dataset's recipe "
                        "(digits 12, CIFAR-10 30, CIFAR-100 100)")

    g = p.add_argument_group("forget set and deletion requests")
    g.add_argument("--forget", choices=FORGET_KINDS, default=forget_default,
                   help="forget set: 'random' examples of the training split, every training example of "
                        "--forget-classes, or 'mix': a third each of the lowest, median and highest "
                        f"memorization by --proxy (default {forget_default})")
    g.add_argument("--forget-size", type=int, default=None, metavar="N",
                   help="examples per request for random and mix (default 90 on digits, 3000 otherwise: the "
                        "paper's 3,000 of CIFAR's 45,000)")
    g.add_argument("--forget-classes", type=int_list, default=None, metavar="C[,C...]",
                   help="classes to forget with --forget class, e.g. 0,3 (one per request with --requests K; "
                        "default 0)")
    g.add_argument("--proxy", default=proxy_default, type=proxy_arg, metavar="PROXY",
                   help=f"memorization proxy for --forget mix and RUM, one of {', '.join(PROXIES.names())} "
                        "(learning-event proxies rank every request by the original's training events, their "
                        "_current variants requests 2..K by one pass of the current model), or scores:FILE: a "
                        ".npy/.npz of true memorization scores, one per example of the official training set in "
                        f"its official order (e.g. the published CIFAR estimates; mid = nearest 0.5) "
                        f"(default {proxy_default})")
    g.add_argument("--requests", type=int, default=1, metavar="K",
                   help="sequential deletion requests: request j forgets a new set from what remains, starting "
                        "from request j-1's model, scored against a retrain without all sets so far (default 1)")
    g.add_argument("--selection", choices=SELECTIONS, default=None,
                   help="for a mix over several requests, which model ranks requests 2..K: 'current' (the "
                        "unlearned model, the reference's rule; default of a single run) or 'retrain' (the model "
                        "retrained without the earlier requests: the same sets and retrains for every "
                        "configuration; default of a search)")

    g = p.add_argument_group("where it runs")
    g.add_argument("--store", default=None, metavar="PATH_OR_URI",
                   help=store_help or f"artifact store root, a folder or an fsspec URI such as s3://bucket/path "
                                      f"(default $UNLEARN_STORE or {default_store()})")
    g.add_argument("--device", default=None, metavar="DEVICE",
                   help="torch device: cpu, cuda or cuda:N (default cuda when present, else cpu)")


def check_forget_args(args: argparse.Namespace) -> None:
    """Combinations argparse cannot see; one line each."""
    if args.forget != "class" and args.forget_classes is not None:
        raise ConfigError("--forget-classes needs --forget class")
    if args.forget == "class" and args.forget_size is not None:
        raise ConfigError("--forget-size applies to --forget random and mix; --forget class forgets every example "
                          "of --forget-classes")
    if args.requests < 1:
        raise ConfigError(f"--requests must be >= 1, got {args.requests}")


def spec_from_args(args: argparse.Namespace, *, dataset: Optional[str] = None, arch: Optional[str] = None,
                   seed: int = 0, store: Optional[str] = None) -> ExperimentSpec:
    """The ExperimentSpec of these flags (dataset/arch/seed/store given explicitly where a CLI loops over them)."""
    check_forget_args(args)
    extra = {"forget_classes": args.forget_classes} if args.forget_classes is not None else {}
    return ExperimentSpec(dataset=dataset or args.dataset, arch=arch or args.arch, width=args.width, seed=seed,
                          split_seed=args.split_seed, forget=args.forget, forget_size=args.forget_size,
                          proxy=args.proxy, data_dir=args.data_dir, store=store or args.store, device=args.device,
                          train_epochs=args.train_epochs, **extra)


def check_device(device: Optional[str]) -> None:
    """A device string torch knows and this machine has (cpu, cuda, cuda:N), or ConfigError."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but no CUDA device is available; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: there are only {torch.cuda.device_count()} CUDA devices")
    elif dev.type != "cpu":
        raise ConfigError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
