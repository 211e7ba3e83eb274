"""`python -m unlearn_core run ...`: one unlearning experiment, without Ray.

original → forget set → retrain from scratch → unlearn → metrics, exactly as the tuner's trials do it (the
parser only builds an `ExperimentSpec` and the algorithm's hyperparameters and calls `run_experiment`).
Originals, retrains and the retrained model's metrics are cached in the artifact store (`--store`), so a
second run on the same (dataset, arch, width, seed, forget set) only unlearns.

    python -m unlearn_core run --algorithm scrub --dataset digits --arch resnet18
    python -m unlearn_core run --algorithm neggrad_plus --param beta=0.95,lr=0.01 --json

Progress goes to stderr, the result record to stdout (a table, or JSON with --json). A user error (bad name,
value or data) is one `error: ...` line on stderr and exit status 2; a diverged run is a result (its record has
`diverged` set), not an error.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Optional, Sequence

from .data import dataset_names, load_dataset
from .errors import ConfigError, UnlearnError
from .experiment import FORGET_KINDS, ExperimentSpec, Workspace, default_store, run_experiment
from .models import model_names
from .proxies import PROXIES
from .unlearning import ALGORITHMS, make_config

PROG = "python -m unlearn_core"
CLI_FORGET_KINDS = FORGET_KINDS
RUM = "rum"  # the meta-algorithm: its sub-steps are configured by --rum-plan, not --param


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), like every other error of this CLI; exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 0,3, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one class, got {text!r}")
    return values


def _algorithm_help() -> str:
    """One line per algorithm: the first line of its module's docstring."""
    lines = []
    for name in ALGORITHMS.names():
        doc = (sys.modules[ALGORITHMS.get(name).__module__].__doc__ or "").strip()
        lines.append(f"{name}: {doc.splitlines()[0].rstrip('.')}" if doc else name)
    return "; ".join(lines)


def _hyperparameter_help() -> str:
    import dataclasses

    parts = []
    for name in ALGORITHMS.names():
        cfg = ALGORITHMS.get(name).Config()
        parts.append(f"{name}: " + ", ".join(f"{f.name}={getattr(cfg, f.name)}" for f in dataclasses.fields(cfg)))
    return "; ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Machine unlearning in plain PyTorch: run one experiment (train the original, retrain "
                    "from scratch without the forget set, unlearn it, and score the result with ToW and "
                    "ToW-MIA). For hyperparameter searches on Ray use `python -m tuner.search`.",
        epilog=f"`{PROG} run --help` lists the options of an experiment.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    r = sub.add_parser(
        "run", help="run one unlearning experiment and print its result record",
        description="Run one unlearning experiment: original → forget set → retrain → unlearn → metrics. "
                    "Originals, retrains and the retrained model's metrics are cached in the artifact store, "
                    "so a second run with the same data/model/seed/forget set only unlearns. Progress goes to "
                    "stderr, the result to stdout.",
        epilog=f"Hyperparameters and their defaults (--param NAME=VALUE): {_hyperparameter_help()}.",
    )

    g = r.add_argument_group("unlearning")
    g.add_argument("--algorithm", required=True, choices=ALGORITHMS.names() + [RUM], metavar="ALGORITHM",
                   help=f"unlearning algorithm, one of {', '.join(ALGORITHMS.names() + [RUM])} ({_algorithm_help()}; "
                        "rum: refine the forget set into low/mid/high memorization subsets by --proxy and unlearn "
                        "them in that order, each with its own algorithm from --rum-plan)")
    g.add_argument("--param", action="append", default=[], metavar="NAME=VALUE[,NAME=VALUE...]",
                   help="a hyperparameter of the algorithm, overriding its default (the paper's CIFAR-10 "
                        "config); repeatable, or several comma-separated. Unknown names and invalid values "
                        "are refused before anything trains (see the list below)")
    g.add_argument("--rum-plan", default=None, metavar="PLAN",
                   help="RUM's three sub-steps, low → mid → high memorization: 'ALG[:NAME=VALUE;...],ALG,ALG' "
                        "with ALG in none, finetune, neggrad_plus, scrub (e.g. "
                        "'none,finetune:lr=0.1;epochs=5,neggrad_plus:beta=0.97'), or the JSON list "
                        "[{\"algorithm\": ..., \"params\": {...}}, ...] (default: the paper's NegGrad+ plan, Table C.4)")
    g.add_argument("--proxy", default="confidence", choices=PROXIES.names(), metavar="PROXY",
                   help=f"memorization proxy for --forget mix and RUM, one of {', '.join(PROXIES.names())} "
                        "(default confidence)")
    g.add_argument("--steps", type=int, default=1, metavar="K",
                   help="sequential deletion requests: request j forgets a new set from what remains, starting "
                        "from request j-1's model, scored against a retrain without all sets so far (default 1)")
    g.add_argument("--seed", type=int, default=0,
                   help="model seed: initial weights, training order, random forget set, unlearning (default 0)")

    g = r.add_argument_group("data and forget set")
    g.add_argument("--dataset", default="digits", choices=dataset_names(), metavar="DATASET",
                   help=f"dataset, one of {', '.join(dataset_names())} (default digits: scikit-learn's bundled "
                        "digits, no download)")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder with the dataset files: for cifar10/cifar100 the folder holding the official "
                        "python-pickle folder (default $UNLEARN_DATA_DIR or ~/.cache/unlearn/data); for "
                        "imagefolder (required) a folder with train/<class>/* and test/<class>/*")
    g.add_argument("--download", action="store_true",
                   help="fetch CIFAR-10/100 through torchvision when its files are missing")
    g.add_argument("--split-seed", type=int, default=1,
                   help="seed of the per-class 90/10 train/validation split (default 1, as the reference)")
    g.add_argument("--forget", choices=CLI_FORGET_KINDS, default="random",
                   help="forget set: 'random' examples of the training split, every training example of "
                        "--forget-classes, or 'mix': a third each of the lowest, median and highest "
                        "memorization by --proxy (default random)")
    g.add_argument("--forget-size", type=int, default=None, metavar="N",
                   help="size of a random forget set (default 90 on digits, 3000 otherwise: the paper's "
                        "3,000 of CIFAR's 45,000)")
    g.add_argument("--forget-classes", type=_int_list, default=None, metavar="C[,C...]",
                   help="classes to forget with --forget class, e.g. 0,3 (default 0)")

    g = r.add_argument_group("model")
    g.add_argument("--arch", default="resnet18", choices=model_names(), metavar="ARCH",
                   help=f"architecture, one of {', '.join(model_names())} (default resnet18)")
    g.add_argument("--width", type=float, default=None, metavar="F",
                   help="channel multiplier > 0 (default 0.25 on digits, 1.0 = the reference model otherwise)")
    g.add_argument("--train-epochs", type=int, default=None, metavar="N",
                   help="epochs of the original and the retrained model, overriding the dataset's recipe "
                        "(digits 12, CIFAR-10 30, CIFAR-100 100)")

    g = r.add_argument_group("execution and output")
    g.add_argument("--store", default=None, metavar="PATH_OR_URI",
                   help=f"artifact store root, a folder or an fsspec URI such as s3://bucket/path (default "
                        f"$UNLEARN_STORE or {default_store()})")
    g.add_argument("--device", default=None, metavar="DEVICE",
                   help="torch device: cpu, cuda or cuda:N (default cuda when present, else cpu)")
    g.add_argument("--json", action="store_true",
                   help="print the whole result record as JSON instead of a table")
    return p


# The paper's RUM NegGrad+ recipe (Table C.4 / RUM:main_rum_proxy.py): β 0.99 → 0.97 → 0.97, 5 → 5 → 10 epochs.
DEFAULT_RUM_PLAN = ("neggrad_plus:beta=0.99;epochs=5;lr=0.01,neggrad_plus:beta=0.97;epochs=5;lr=0.01,"
                    "neggrad_plus:beta=0.97;epochs=10;lr=0.001")


def parse_rum_plan(text: str) -> Any:
    """`--rum-plan` → the plan `rum.parse_plan` takes (JSON passes through; the short form is expanded)."""
    if text.lstrip().startswith("["):
        return text
    steps = []
    for part in text.split(","):
        alg, _, rest = part.strip().partition(":")
        params = {}
        for pair in filter(None, (x.strip() for x in rest.split(";"))):
            k, eq, v = pair.partition("=")
            if not eq:
                raise ConfigError(f"--rum-plan expects ALG:NAME=VALUE;..., got {part!r}")
            params[k.strip()] = v.strip()
        steps.append({"algorithm": alg, "params": params})
    return steps


def parse_params(items: Sequence[str]) -> dict[str, str]:
    """`["a=1", "b=2,c=3"]` → {"a": "1", "b": "2", "c": "3"}; values stay strings (make_config coerces them)."""
    params: dict[str, str] = {}
    for item in items:
        for pair in item.split(","):
            if not pair.strip():
                continue
            name, eq, value = pair.partition("=")
            name, value = name.strip(), value.strip()
            if not eq or not name or not value:
                raise ConfigError(f"--param expects NAME=VALUE, got {pair!r}")
            if name in params and params[name] != value:
                raise ConfigError(f"--param {name} is given twice ({params[name]} and {value})")
            params[name] = value
    return params


def _check_device(device: Optional[str]) -> None:
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


def spec_from_args(args: argparse.Namespace) -> ExperimentSpec:
    if args.forget != "class" and args.forget_classes is not None:
        raise ConfigError("--forget-classes needs --forget class")
    if args.forget == "class" and args.forget_size is not None:
        raise ConfigError("--forget-size applies to --forget random; --forget class forgets every example of "
                          "--forget-classes")
    extra = {"forget_classes": args.forget_classes} if args.forget_classes is not None else {}
    return ExperimentSpec(dataset=args.dataset, arch=args.arch, width=args.width, seed=args.seed,
                          split_seed=args.split_seed, forget=args.forget, forget_size=args.forget_size,
                          proxy=args.proxy,
                          data_dir=args.data_dir, store=args.store, device=args.device,
                          train_epochs=args.train_epochs, **extra)


def _jsonable(v: Any) -> Any:
    """Plain JSON: tuples → lists, numpy scalars → Python, non-finite floats → "inf"/"-inf"/"nan" strings."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


_ROWS = (("forget_acc", "forget acc (%)", "{:.2f}"), ("retain_acc", "retain acc (%)", "{:.2f}"),
         ("val_acc", "val acc (%)", "{:.2f}"), ("test_acc", "test acc (%)", "{:.2f}"),
         ("mia", "MIA (0-1)", "{:.4f}"))


def format_table(rec: dict) -> str:
    """The record for people: unlearned vs retrained side by side, then ToW / ToW-MIA, seconds, device."""
    s = rec["spec"]
    forget = (f"{s['forget_size']} random examples" if s["forget"] == "random"
              else f"classes {','.join(map(str, s['forget_classes']))} ({s['forget_size']} examples)")
    lines = [f"{rec['algorithm']} on {s['dataset']}: {s['arch']} (width {s['width']:g}), seed {rec['seed']}, "
             f"forget {forget}",
             "params: " + " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in rec["params"].items()),
             ""]
    lines.append(f"{'':<16}{'unlearned':>11}{'retrained':>11}")
    for key, label, fmt in _ROWS:
        lines.append(f"{label:<16}{fmt.format(rec[key]):>11}{fmt.format(rec['retrain'][key]):>11}")
    lines.append("")
    if rec.get("diverged"):
        d = rec["diverged"]
        lines.append(f"DIVERGED in epoch {d['epoch'] + 1}: {d['reason']} (value {d['value']:.4g}); "
                     f"metrics are those of the diverged model")
    lines.append(f"{'ToW':<16}{rec['tow']:>11.4f}")
    lines.append(f"{'ToW-MIA':<16}{rec['tow_mia']:>11.4f}")
    lines.append(f"{'seconds':<16}unlearn {rec['unlearn_seconds']:.1f}, retrain {rec['retrain_seconds']:.1f}")
    env = rec.get("env", {})
    dev, host = str(rec.get("device", "")), str(env.get("device", ""))
    # env's device names the GPU when one is present, else the CPU ("cpu (x86_64, 2 cores)"): show what ran.
    if dev.startswith("cuda"):
        shown = f"{dev} ({host})" if not host.startswith("cpu") else dev
    else:
        shown = host if host.startswith("cpu") else dev
    lines.append(f"{'device':<16}{shown}")
    lines.append(f"{'versions':<16}torch {env.get('torch')}, numpy {env.get('numpy')}, "
                 f"scikit-learn {env.get('sklearn')}, python {env.get('python')}")
    return "\n".join(lines)


def _num(v, fmt: str) -> str:
    return "—" if v is None else fmt.format(v)


def format_requests(rec: dict) -> str:
    """A sequential / RUM record for people: one row per request (unlearned / retrained), then the means."""
    s = rec["spec"]
    lines = [f"{rec['algorithm']} on {s['dataset']}: {s['arch']} (width {s['width']:g}), seed {rec['seed']}, "
             f"{rec['requests']} request(s), forget {s['forget']}"
             + (f" by {s['proxy']}" if s["forget"] == "mix" else ""),
             "params: " + json.dumps(_jsonable(rec["params"])), "",
             f"{'request':>7} {'forget':>6} {'forget acc u/r':>15} {'retain acc u/r':>15} {'test acc u/r':>15} "
             f"{'MIA u/r':>13} {'ToW':>7} {'ToW-MIA':>7} {'unlearn s':>9}"]
    for st in rec["steps"]:
        r = st["retrain"]
        lines.append(f"{st['request']:>7} {st['forget_size']:>6} "
                     f"{_num(st['forget_acc'], '{:.1f}'):>7}/{r['forget_acc']:<7.1f} "
                     f"{_num(st['retain_acc'], '{:.1f}'):>7}/{r['retain_acc']:<7.1f} "
                     f"{_num(st['test_acc'], '{:.1f}'):>7}/{r['test_acc']:<7.1f} "
                     f"{_num(st['mia'], '{:.3f}'):>6}/{r['mia']:<6.3f} "
                     f"{_num(st['tow'], '{:.4f}'):>7} {_num(st['tow_mia'], '{:.4f}'):>7} {st['unlearn_seconds']:>9.1f}")
        for sub in st.get("substeps") or []:
            lines.append(f"{'':>7} └ {sub.get('level', '')}: {sub.get('algorithm')} on {sub.get('forget_size', '?')} "
                         f"examples, {sub.get('unlearn_seconds', 0):.1f}s")
    lines += ["", f"mean ToW {_num(rec['tow'], '{:.4f}')}, ToW-MIA {_num(rec['tow_mia'], '{:.4f}')}; "
              f"unlearning {rec['unlearn_seconds']:.1f}s vs retraining {rec['retrain_seconds']:.1f}s"]
    if rec.get("diverged"):
        lines.append(f"DIVERGED in request {rec['diverged']['request']}: {rec['diverged'].get('reason')}")
    env = rec.get("env", {})
    lines.append(f"device {env.get('device')}; torch {env.get('torch')}")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    params: dict = parse_params(args.param)
    if args.algorithm == RUM:
        if params:
            raise ConfigError("rum takes its sub-steps' hyperparameters from --rum-plan, not --param")
        from .rum import parse_plan, plan_dict

        params = {"plan": plan_dict(parse_plan(parse_rum_plan(args.rum_plan or DEFAULT_RUM_PLAN))), "proxy": args.proxy}
    else:
        if args.rum_plan:
            raise ConfigError("--rum-plan applies to --algorithm rum only")
        make_config(args.algorithm, params)  # every hyperparameter check, before data, training or the store
    if args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    spec = spec_from_args(args)
    _check_device(spec.device)
    dataset = load_dataset(spec.dataset, spec.data_dir, spec.split_seed, download=args.download)
    ws = Workspace(spec, dataset, log=log)
    if args.algorithm == RUM or args.steps > 1:
        from .sequential import run_sequential

        record = run_sequential(spec, args.algorithm, params, steps=args.steps, workspace=ws, log=log)
        record["device"] = str(ws.device)
        print(json.dumps(_jsonable(record), indent=2, allow_nan=False) if args.json else format_requests(record))
        return 0
    record = run_experiment(spec, args.algorithm, params, workspace=ws, log=log)
    record["device"] = str(ws.device)
    if args.json:
        print(json.dumps(_jsonable(record), indent=2, allow_nan=False))
    else:
        print(format_table(record))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        raise AssertionError(f"unhandled command {args.command!r}")
    except UnlearnError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line, whatever the message
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
