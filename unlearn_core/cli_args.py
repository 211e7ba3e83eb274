"""The experiment flags every CLI shares (`python -m unlearn_core run`, `tuner.search`, `tuner.study`), and the
one argparse class they all use.

`add_experiment_args(parser, defaults)` adds them — data, model, forget set, proxy, requests, store, device,
precision, memory format —
with `choices` taken from the registries and each default (and its text in --help) from its one source: a
single run's are `ExperimentSpec`'s fields and `run.start`'s (`run_defaults()`), a search's its
`SearchSettings`; a default that depends on the dataset is read from where it is decided (the recipes,
`ExperimentSpec`'s per-dataset width and forget size). `spec_from_args(args, ...)` turns the flags into an
`ExperimentSpec`, so the three CLIs speak one vocabulary and check it one way.

    p = Parser(prog="python -m mytool")
    add_experiment_args(p)                  # a single run's defaults
    spec = spec_from_args(p.parse_args(["--dataset", "digits", "--forget", "mix"]))
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
from typing import Any, Callable, Mapping, Optional, Sequence

from .data import dataset_names
from .dataset import DATA_DIR_ENV, DEFAULT_DATA_DIR
from .errors import ConfigError
from .models import model_names
from .numerics import MEMORY_FORMATS, PRECISIONS, default_memory_format, default_precision
from .proxies import PROXIES, absolute_proxy, check_proxy
from .spec import FORGET_KINDS, RANKING_MODELS, ExperimentSpec, default_store


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `error: MESSAGE (see 'PROG --help')` on stderr and exit status 2, without
    the usage block first, like every other error of these CLIs (give subparsers `parser_class=Parser`)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def shown(value: Any) -> str:
    """A default as --help shows it: a list as typed (space-separated), a tuple of classes as `0,3`."""
    if isinstance(value, list):
        return " ".join(map(str, value))
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def with_default(help: str, default: str) -> str:
    """`help (default DEFAULT)`: the one form a default takes in every --help (tests read it back from there)."""
    return f"{help} (default {default})"


def add_flag(group, option: str, help: str, default: Any = None, said: Optional[str] = None, **kw):
    """`group.add_argument(option, ...)` with `default` and --help saying it: `said` where given (what a None
    default stands for, a rule), else the value itself; a store_true flag has no default to say."""
    if kw.get("action") == "store_true":
        return group.add_argument(option, help=help, **kw)
    if said is None and default is None:
        raise ValueError(f"{option}: a None default needs `said` (what it stands for)")
    text = shown(default) if said is None else said
    return group.add_argument(option, default=default, help=with_default(help, text), **kw)


def by_dataset(value_of: Callable[[str], Any]) -> str:
    """A per-dataset default in words, read from its source: '0.125 on digits; 1.0 on cifar10, cifar100'."""
    groups: dict = {}
    for name in dataset_names():
        groups.setdefault(value_of(name), []).append(name)
    return "; ".join(f"{v} on {', '.join(names)}" for v, names in groups.items())


def by_device(value_of: Callable[[str], str]) -> str:
    """A per-device default in words, read from its source: 'bf16 on cuda, fp32 on cpu', or one value for all."""
    values = {kind: value_of(kind) for kind in ("cuda", "cpu")}
    if len(set(values.values())) == 1:
        return values["cpu"]
    return ", ".join(f"{v} on {kind}" for kind, v in values.items())


def run_defaults() -> dict:
    """The experiment flags' defaults of a single run (flag dest → value): `ExperimentSpec`'s fields and
    `run.start`'s requests and ranking model. --forget-classes stays None (only --forget class takes it)."""
    from .run import start

    keywords = inspect.signature(start).parameters
    return {**{f.name: f.default for f in dataclasses.fields(ExperimentSpec)}, "forget_classes": None,
            "requests": keywords["requests"].default, "ranking_model": keywords["ranking_model"].default}


def none_means() -> dict:
    """What a None default of an experiment flag stands for, as --help says it (flag dest → text)."""
    from .training import recipe_for

    return {"width": by_dataset(lambda d: ExperimentSpec(dataset=d).resolved_width),
            "forget_size": by_dataset(lambda d: ExperimentSpec(dataset=d).resolved_forget_size),
            "train_epochs": "the dataset's recipe: " + by_dataset(lambda d: recipe_for(d).epochs),
            "forget_classes": shown(ExperimentSpec().forget_classes),
            "data_dir": f"${DATA_DIR_ENV} or {DEFAULT_DATA_DIR}",
            "store": f"$UNLEARN_STORE or {default_store()}",
            "device": "cuda when present, else cpu",
            "precision": by_device(default_precision),
            "memory_format": by_device(default_memory_format)}



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


def add_experiment_args(p: argparse.ArgumentParser, defaults: Optional[Mapping[str, Any]] = None, *,
                        several: bool = False, texts: Optional[Mapping[str, str]] = None,
                        omit: Sequence[str] = ()) -> None:
    """Add the experiment flags to `p`.

    `defaults`: flag dest → default, a single run's (`run_defaults()`) where absent. `texts`: dest → what --help
    says the default is where the value alone does not tell (e.g. "the preset's"); a None default otherwise
    shows what it stands for (`none_means()`). With `several`, --dataset and --arch take one or more values (a
    search grid). `omit`: dests of flags left out (a CLI that declares its own).
    """
    d = {**run_defaults(), **(defaults or {})}
    said = {**none_means(), **(texts or {})}

    def add(group, option: str, help: str, **kw) -> None:
        dest = option[2:].replace("-", "_")
        if dest in omit:
            return
        if kw.get("action") == "store_true":
            add_flag(group, option, help, **kw)
        else:
            told = said[dest] if (texts and dest in texts) or d[dest] is None else None
            add_flag(group, option, help, d[dest], told, **kw)

    n = "+" if several else None
    which = "one or more of" if several else "one of"
    g = p.add_argument_group("data and model")
    add(g, "--dataset", f"{which} {', '.join(dataset_names())} (digits: scikit-learn's bundled digits, no download)",
        nargs=n, choices=dataset_names(), metavar="DATASET")
    add(g, "--arch", f"architecture, {which} {', '.join(model_names())}", nargs=n, choices=model_names(),
        metavar="ARCH")
    add(g, "--width", "channel multiplier > 0 (1.0 = the reference model)", type=float, metavar="F")
    add(g, "--data-dir", "folder with the dataset files: for cifar10/cifar100 the folder holding the official "
                         "python-pickle folder; for imagefolder (required) a folder with train/<class>/* and "
                         "test/<class>/*", metavar="DIR")
    add(g, "--download", "fetch CIFAR-10/100 through torchvision when its files are missing", action="store_true")
    add(g, "--split-seed", "seed of the per-class 90/10 train/validation split", type=int)
    add(g, "--train-epochs", "epochs of the original and the retrained model, overriding the dataset's recipe",
        type=int, metavar="N")

    g = p.add_argument_group("forget set and deletion requests")
    add(g, "--forget", "forget set: 'random' examples of the training split, every training example of "
                       "--forget-classes, or 'mix': a third each of the lowest, median and highest memorization "
                       "by --proxy", choices=FORGET_KINDS)
    add(g, "--forget-size", "examples per request for random and mix (the paper's 3,000 of CIFAR's 45,000, "
                            "digits scaled to the same share)", type=int, metavar="N")
    add(g, "--forget-classes", "classes to forget with --forget class, e.g. 0,3 (one per request with "
                               "--requests K)", type=int_list, metavar="C[,C...]")
    add(g, "--proxy", f"memorization proxy for --forget mix and RUM, one of {', '.join(PROXIES.names())} "
                      "(learning-event proxies rank every request by the original's training events, their "
                      "_current variants requests 2..K by one pass of the current model), or scores:FILE: a "
                      ".npy/.npz of true memorization scores, one per example of the official training set in its "
                      "official order (e.g. the published CIFAR estimates; mid = nearest 0.5)",
        type=proxy_arg, metavar="PROXY")
    add(g, "--requests", "sequential deletion requests: request j forgets a new set from what remains, starting "
                         "from request j-1's model, scored against a retrain without all sets so far",
        type=int, metavar="K")
    add(g, "--ranking-model", "for a mix over several requests, which model ranks the forget sets of requests "
                              "2..K: 'current' (the unlearned model, the reference's rule) or 'retrain' (the "
                              "model retrained without the earlier requests: the same sets and retrains for every "
                              "configuration)", choices=RANKING_MODELS)

    g = p.add_argument_group("where it runs")
    add(g, "--store", "artifact store root, a folder or an fsspec URI such as s3://bucket/path",
        metavar="PATH_OR_URI")
    add(g, "--device", "torch device: cpu, cuda or cuda:N", metavar="DEVICE")
    add(g, "--precision", "what forward passes compute in (training, unlearning, evaluation, the MIA's "
                          "probabilities): fp32, or bf16 autocast; recorded with every result", choices=PRECISIONS)
    add(g, "--memory-format", "layout of models and their inputs", choices=MEMORY_FORMATS)


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
                          train_epochs=args.train_epochs, precision=args.precision,
                          memory_format=args.memory_format, **extra)


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
