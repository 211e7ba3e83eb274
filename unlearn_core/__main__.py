"""`python -m unlearn_core run ...`: one unlearning experiment, without Ray.

original → forget set → retrain from scratch → unlearn → metrics, through the same run driver as the tuner's
trials (`unlearn_core.run.start`). Originals, retrains and the retrained model's metrics are cached in the
artifact store (`--store`), so a second run on the same (dataset, arch, width, seed, forget set) only unlearns.

    python -m unlearn_core run --algorithm scrub --dataset digits --arch resnet18
    python -m unlearn_core run --algorithm neggrad_plus --param beta=0.95,lr=0.01 --json

Progress goes to stderr, the result record to stdout (a table, or JSON with --json). A user error (bad name,
value or data) is one `error: ...` line on stderr and exit status 2; a diverged run is a result (its record has
`diverged` set), not an error.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Optional, Sequence

from .cli_args import Parser, add_experiment_args, check_device, spec_from_args
from .data import load_dataset
from .environment import use_cpus
from .errors import ConfigError, UnlearnError
from .jsonable import dumps
from .rum import PLANS, SCRIPT_NEGGRAD_PLUS_PLAN, stage_algorithms
from .run import check, start
from .unlearning import ALGORITHMS
from .workspace import Workspace

PROG = "python -m unlearn_core"


def _algorithm_help() -> str:
    """One line per algorithm: the first line of its module's docstring."""
    lines = []
    for name in ALGORITHMS.names():
        doc = (sys.modules[ALGORITHMS.get(name).__module__].__doc__ or "").strip()
        lines.append(f"{name}: {doc.splitlines()[0].rstrip('.')}" if doc else name)
    return "; ".join(lines)


def _hyperparameter_help() -> str:
    parts = []
    for name in ALGORITHMS.names():
        if name == "rum":
            continue  # its config is the plan (--rum-plan)
        cfg = ALGORITHMS.get(name).Config()
        parts.append(f"{name}: " + ", ".join(f"{f.name}={getattr(cfg, f.name)}" for f in dataclasses.fields(cfg)))
    return "; ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Machine unlearning in plain PyTorch: run one experiment (train the original, retrain "
                    "from scratch without the forget set, unlearn it, and score the result with ToW and "
                    "ToW-MIA). For hyperparameter searches on Ray use `python -m tuner.search`.",
        epilog=f"`{PROG} run --help` lists the options of an experiment.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    r = sub.add_parser(
        "run", help="run one unlearning experiment and print its result record",
        description="Run one unlearning experiment: original → forget set → retrain → unlearn → metrics. "
                    "Originals, retrains and the retrained model's metrics are cached in the artifact store, "
                    "so a second run with the same data/model/seed/forget set only unlearns. Progress goes to "
                    "stderr, the result to stdout.",
        epilog=f"Hyperparameters and their defaults (--param NAME=VALUE): {_hyperparameter_help()}.",
    )
    g = r.add_argument_group("unlearning")
    g.add_argument("--algorithm", required=True, choices=ALGORITHMS.names(), metavar="ALGORITHM",
                   help=f"unlearning algorithm, one of {', '.join(ALGORITHMS.names())} ({_algorithm_help()})")
    g.add_argument("--param", action="append", default=[], metavar="NAME=VALUE[,NAME=VALUE...]",
                   help="a hyperparameter of the algorithm, overriding its default (the paper's CIFAR-10 "
                        "config); repeatable, or several comma-separated. Unknown names and invalid values "
                        "are refused before anything trains (see the list below)")
    g.add_argument("--rum-plan", default=None, metavar="PLAN",
                   help="RUM's three stages, low → mid → high memorization: 'ALG[:NAME=VALUE;...],ALG,ALG' "
                        f"with ALG in {', '.join(stage_algorithms())} (e.g. "
                        "'none,finetune:lr=0.1;epochs=5,neggrad_plus:beta=0.97'), a named plan "
                        f"({', '.join(PLANS)}; paper_cifar10: the paper's none → finetune → salun), or the JSON list "
                        "[{\"algorithm\": ..., \"params\": {...}}, ...] (default: the RUM script's NegGrad+ plan, "
                        "β 0.99/0.97/0.97, lr 0.01/0.01/0.001, Table C.4's epochs 5/5/10)")
    g.add_argument("--seed", type=int, default=0,
                   help="model seed: initial weights, training order, random forget set, unlearning (default 0)")
    add_experiment_args(r)
    g = r.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print the whole result record as JSON instead of a table")
    return p


def parse_rum_plan(text: str) -> Any:
    """`--rum-plan` → the plan `rum.parse_plan` takes (JSON passes through; the short form is expanded)."""
    if text.lstrip().startswith("[") or text.strip() in PLANS:  # JSON, or a named plan (rum.PLANS)
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


_ROWS = (("forget_acc", "forget acc (%)", "{:.2f}"), ("retain_acc", "retain acc (%)", "{:.2f}"),
         ("val_acc", "val acc (%)", "{:.2f}"), ("test_acc", "test acc (%)", "{:.2f}"),
         ("mia", "MIA (0-1)", "{:.4f}"))


def format_table(rec: dict) -> str:
    """The record for people: unlearned vs retrained side by side, then ToW / ToW-MIA, seconds, device, numerics."""
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
        lines.append(f"{label:<16}{_num(rec[key], fmt):>11}{fmt.format(rec['retrain'][key]):>11}")
    lines.append("")
    if rec.get("diverged"):
        d = rec["diverged"]
        lines.append(f"DIVERGED in epoch {d['epoch'] + 1}: {d['reason']} (value {d['value']:.4g}); the run scores "
                     f"0, the accuracies and MIA are the diverged model's")
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
    lines.append(f"{'numerics':<16}{s.get('precision')}, {s.get('memory_format')}")
    lines.append(f"{'versions':<16}torch {env.get('torch')}, numpy {env.get('numpy')}, "
                 f"scikit-learn {env.get('sklearn')}, python {env.get('python')}")
    return "\n".join(lines)


def _num(v, fmt: str) -> str:
    return "—" if v is None else fmt.format(v)


def format_requests(rec: dict) -> str:
    """A sequential / RUM record for people: one row per request (unlearned / retrained), then the means."""
    s = rec["spec"]
    lines = [f"{rec['algorithm']} on {s['dataset']}: {s['arch']} (width {s['width']:g}), seed {rec['seed']}, "
             f"{rec['request_count']} request(s), forget {s['forget']}"
             + (f" by {s['proxy']}" if s["forget"] == "mix" else ""),
             "params: " + dumps(rec["params"]), "",
             f"{'request':>7} {'forget':>6} {'forget acc u/r':>15} {'retain acc u/r':>15} {'test acc u/r':>15} "
             f"{'MIA u/r':>13} {'ToW':>7} {'ToW-MIA':>7} {'unlearn s':>9}"]
    for st in rec["requests"]:
        r = st["retrain"]
        lines.append(f"{st['request']:>7} {st['forget_size']:>6} "
                     f"{_num(st['forget_acc'], '{:.1f}'):>7}/{r['forget_acc']:<7.1f} "
                     f"{_num(st['retain_acc'], '{:.1f}'):>7}/{r['retain_acc']:<7.1f} "
                     f"{_num(st['test_acc'], '{:.1f}'):>7}/{r['test_acc']:<7.1f} "
                     f"{_num(st['mia'], '{:.3f}'):>6}/{r['mia']:<6.3f} "
                     f"{_num(st['tow'], '{:.4f}'):>7} {_num(st['tow_mia'], '{:.4f}'):>7} {st['unlearn_seconds']:>9.1f}")
        for sub in st.get("stages") or []:
            lines.append(f"{'':>7} └ {sub.get('level', '')}: {sub.get('algorithm')} on {sub.get('forget_size', '?')} "
                         f"examples, {sub.get('unlearn_seconds', 0):.1f}s")
    lines += ["", f"mean ToW {_num(rec['tow'], '{:.4f}')}, ToW-MIA {_num(rec['tow_mia'], '{:.4f}')}; "
              f"unlearning {rec['unlearn_seconds']:.1f}s vs retraining {rec['retrain_seconds']:.1f}s"]
    if rec.get("diverged"):
        lines.append(f"DIVERGED in request {rec['diverged']['request']}: {rec['diverged'].get('reason')}")
    env, spec = rec.get("env", {}), rec.get("spec", {})
    lines.append(f"device {env.get('device')}; {spec.get('precision')}, {spec.get('memory_format')}; "
                 f"torch {env.get('torch')}")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    params: dict = parse_params(args.param)
    if args.algorithm == "rum":
        if params:
            raise ConfigError("rum takes its stages' hyperparameters from --rum-plan, not --param")
        params = {"plan": parse_rum_plan(args.rum_plan) if args.rum_plan else SCRIPT_NEGGRAD_PLUS_PLAN,
                  "proxy": args.proxy}
    elif args.rum_plan:
        raise ConfigError("--rum-plan applies to --algorithm rum only")
    spec = spec_from_args(args, seed=args.seed)
    check_device(spec.device)
    use_cpus(None)
    ranking_model = args.ranking_model or "current"
    check(spec, args.algorithm, params, requests=args.requests, ranking_model=ranking_model)  # before data, training
    dataset = load_dataset(spec.dataset, spec.data_dir, spec.split_seed, download=args.download)
    ws = Workspace(spec, dataset, log=log)
    run = start(spec, args.algorithm, params, ws, requests=args.requests, ranking_model=ranking_model, log=log)
    record = run.run()
    record["device"] = str(ws.device)
    if args.json:
        print(dumps(record, indent=2))
    elif args.algorithm == "rum" or args.requests > 1:
        print(format_requests(record))
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
    from unlearn_core.errors import one_line_warnings

    one_line_warnings()
    sys.exit(main())
