#!/usr/bin/env python3
"""CPU seconds of the SVC membership-inference attack in one trial evaluation, before and after issue #14.

    python benchmarks/mia_cost.py            # real CIFAR-10 from .data/cifar10, one core, ≈ 4–5 min
    python benchmarks/mia_cost.py --tiny     # synthetic probabilities, small sizes: a smoke run, seconds

One evaluation's CPU side is `metrics.svc_mia`: the attack features of 10k shadow members (retain), 10k
non-members (test) and a 3k target (forget), one SVC fit and one predict per attack. "before" is the plain fit
of every row, as the code did before issue #14; "after" is `svc_mia` as it is now (one weighted row per
distinct (feature, label) pair). Both predict the target once per distinct row.

The probabilities come from a width-0.125 ResNet-18 trained briefly here on a CIFAR-10 subset (forget set
included: the "original" model). fp32: softmax of fp32 logits (the CPU path of `predict_probs`); bf16: softmax
of the logits rounded to bfloat16 first, as `predict_probs` produces them on CUDA under bf16 autocast.
Everything runs on one core: torch, BLAS and OpenMP are set to one thread before they load.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # one core by definition of the measurement; must precede the numpy/torch import

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
import torch  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout that is not pip-installed
    sys.path.insert(0, str(ROOT))

from unlearn_core import metrics  # noqa: E402
from unlearn_core.environment import use_cpus  # noqa: E402

TARGET_S = 0.5  # issue #14: CPU seconds per evaluation (features + fit + predict) on one core


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------------------------------
# Probabilities: a real briefly trained model, or synthetic logits for --tiny
# --------------------------------------------------------------------------------------------------

def logits_of(model: torch.nn.Module, x: np.ndarray, batch: int = 1000) -> torch.Tensor:
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out.append(model(torch.from_numpy(np.array(x[i:i + batch])).float().div_(255)).float())
    return torch.cat(out)


def real_logits(args) -> tuple[dict, dict] | None:
    """{set: (logits, labels)} for shadow members / non-members / target, and notes; None without the data."""
    from unlearn_core.batching import DeviceData
    from unlearn_core.data import load_dataset
    from unlearn_core.models import create_model
    from unlearn_core.training import recipe_for, train

    folder = Path(args.data_dir)
    if not (folder / "cifar-10-batches-py" / "test_batch").is_file():
        print(f"skipped: no CIFAR-10 (cifar-10-batches-py) under {folder}. Fetch it (torchvision) with\n"
              f"  python -c \"from unlearn_core.data import load_dataset; "
              f"load_dataset('cifar10', '{args.data_dir}', download=True)\"")
        return None
    ds = load_dataset("cifar10", folder)
    n = min(args.train_n, len(ds.train))
    x, y = ds.train.x[:n], ds.train.y[:n]
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(n)
    forget, retain = np.sort(perm[:args.forget]), np.sort(perm[args.forget:])
    pick = metrics.shadow_members(len(retain), len(ds.test), args.seed)  # as `evaluate` samples them
    shadow = retain if pick is None else retain[pick]

    torch.manual_seed(args.seed)
    model = create_model("resnet18", ds.num_classes, width=0.125, mean=ds.mean, std=ds.std)
    res = train(model, DeviceData.from_arrays(x, y, "cpu"), recipe_for("cifar10", epochs=args.epochs),
                seed=args.seed, pad=ds.crop_pad, flip=ds.flip)
    sets = {"in": (logits_of(model, x[shadow]), y[shadow]), "out": (logits_of(model, ds.test.x), ds.test.y),
            "target": (logits_of(model, x[forget]), y[forget])}
    acc = {k: round(float((lg.argmax(1).numpy() == lab).mean() * 100), 2) for k, (lg, lab) in sets.items()}
    notes = {"model": "resnet18 width 0.125", "train_images": n, "epochs": args.epochs,
             "train_s": round(res.seconds, 1), "accuracy_pct": acc}
    return sets, notes


def tiny_logits(args) -> tuple[dict, dict]:
    """Synthetic 10-class logits: members more confident than non-members; the target are members.

    A third of the members are certain (confidence rounds to exactly 1.0), so the merged path has rows to merge.
    """
    rng = np.random.default_rng(args.seed)

    def make(n, boost, certain):
        y = rng.integers(0, 10, n)
        lg = rng.normal(size=(n, 10)) * 2.0
        lg[np.arange(n), y] += boost + 40.0 * (rng.random(n) < certain)
        return torch.from_numpy(lg.astype(np.float32)), y

    sets = {"in": make(600, 3.0, 1 / 3), "out": make(600, 1.5, 0.0), "target": make(200, 3.0, 1 / 3)}
    return sets, {"model": "synthetic logits (--tiny)"}


def to_probs(logits: torch.Tensor, precision: str) -> torch.Tensor:
    if precision == "bf16":
        logits = logits.to(torch.bfloat16)  # what a forward under bf16 autocast returns
    return torch.softmax(logits.float(), dim=1)  # softmax in float32, as predict_probs does


# --------------------------------------------------------------------------------------------------
# The attack before and after
# --------------------------------------------------------------------------------------------------

def shuffled_rows(p, attacks, seed):
    """Per attack: (x, labels) in `svc_mia`'s seeded order, and the target's features."""
    f_in = metrics.mia_features(p["in"][0], p["in"][1], attacks=attacks)
    f_out = metrics.mia_features(p["out"][0], p["out"][1], attacks=attacks)
    f_t = metrics.mia_features(p["target"][0], p["target"][1], attacks=attacks)
    n_in, n_out = len(p["in"][1]), len(p["out"][1])
    labels = np.concatenate([np.ones(n_in, np.int64), np.zeros(n_out, np.int64)])
    order = np.random.default_rng(seed).permutation(n_in + n_out)
    return {a: (np.concatenate([f_in[a], f_out[a]])[order], labels[order], f_t[a]) for a in attacks}


def plain_svc_mia(p, attacks, seed):
    """The code before issue #14: every row fit as it is. Returns {attack: target predictions}."""
    preds = {}
    for a, (x, labels, target) in shuffled_rows(p, attacks, seed).items():
        clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x, labels)
        preds[a] = metrics._predict_unique(clf, target)
    return preds


def merged_details(p, attacks, seed):
    """The code after issue #14, opened up: predictions, distinct rows, support vectors and fit / predict seconds."""
    out = {}
    for a, (x, labels, target) in shuffled_rows(p, attacks, seed).items():
        t0 = time.perf_counter()
        clf = metrics._fit_merged_svc(x, labels)
        t1 = time.perf_counter()
        pred = metrics._predict_unique(clf, target)
        t2 = time.perf_counter()
        out[a] = {"pred": pred, "rows": len(x), "distinct_rows": len(metrics._merge_rows(x, labels)[0]),
                  "target_distinct": len(np.unique(target, axis=0)), "support_vectors": int(clf.n_support_.sum()),
                  "fit_s": t1 - t0, "predict_s": t2 - t1}
    return out


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


def mean_std(v: list[float]) -> dict:
    a = np.asarray(v)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": len(a)}


def measure(sets, precision, attacks, repeats, seed) -> dict:
    p = {k: (to_probs(lg, precision), lab) for k, (lg, lab) in sets.items()}
    args = (p["in"][0], p["in"][1], p["out"][0], p["out"][1], p["target"][0], p["target"][1])
    before, after = [], []
    for _ in range(repeats):  # interleaved, so that a slow moment of the machine hits both alike
        t, pred_before = timed(lambda: plain_svc_mia(p, attacks, seed))
        before.append(t)
        t, score_after = timed(lambda: metrics.svc_mia(*args, attacks=attacks, seed=seed))
        after.append(t)
    detail = merged_details(p, attacks, seed)
    pb = np.concatenate([pred_before[a] for a in attacks])
    pa = np.concatenate([detail[a]["pred"] for a in attacks])
    return {
        "precision": precision, "before_s": mean_std(before), "after_s": mean_std(after),
        "agreement": float((pb == pa).mean()),
        "score_before": {a: float(1 - pred_before[a].mean()) for a in attacks}, "score_after": score_after,
        "attacks": {a: {k: v for k, v in d.items() if k != "pred"} for a, d in detail.items()},
    }


def fmt(ms: dict) -> str:
    return f"{ms['mean']:.3f} ± {ms['std']:.3f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="synthetic probabilities, 600 + 600 shadow, 200 target")
    ap.add_argument("--data-dir", default=str(ROOT / ".data" / "cifar10"),
                    help="folder holding cifar-10-batches-py (default: .data/cifar10, git-ignored)")
    ap.add_argument("--train-n", type=int, default=20_000, help="CIFAR-10 training images the model sees")
    ap.add_argument("--forget", type=int, default=3_000, help="target (forget) set size, taken from them")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--attacks", nargs="+", default=[metrics.REPORTED_ATTACK], choices=metrics.ATTACKS)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    use_cpus(1)  # one core: the figure is per core

    got = tiny_logits(args) if args.tiny else real_logits(args)
    if got is None:
        return 0
    sets, notes = got
    attacks = tuple(args.attacks)
    prov = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {cpu_name()}, {os.cpu_count()} CPUs (timed on one thread)",
            "python": platform.python_version(), "torch": torch.__version__, "sklearn": sklearn.__version__,
            "numpy": np.__version__, "command": shlex.join(["python", "benchmarks/mia_cost.py", *sys.argv[1:]]),
            "mode": "tiny" if args.tiny else "cifar10",
            "sizes": {k: len(lab) for k, (_, lab) in sets.items()}, **notes}
    rows = [measure(sets, prec, attacks, args.repeats, args.seed) for prec in ("fp32", "bf16")]

    print(f"# SVC MIA CPU cost per evaluation ({prov['mode']}{', figures mean nothing' if args.tiny else ''})")
    for k in ("date", "machine", "python", "torch", "sklearn", "command", "sizes", "model", "train_s",
              "accuracy_pct"):
        if k in prov:
            print(f"- {k}: {prov[k]}")
    print()
    print("| probabilities | distinct rows / rows | support vectors | before s | after s (fit + predict) "
          "| speed-up | predictions agree | score before / after | after ≤ 0.5 s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        d = list(r["attacks"].values())
        split = " + ".join(f"{x['fit_s']:.2f} + {x['predict_s']:.2f}" for x in d)
        met = "n/a (tiny)" if args.tiny else ("met" if r["after_s"]["mean"] <= TARGET_S else "not met")
        r["target_met"] = None if args.tiny else r["after_s"]["mean"] <= TARGET_S
        print(f"| {r['precision']} | " + ", ".join(f"{x['distinct_rows']:,} / {x['rows']:,}" for x in d)
              + f" | {', '.join(str(x['support_vectors']) for x in d)} | {fmt(r['before_s'])} | "
              f"{fmt(r['after_s'])} ({split}) | {r['before_s']['mean'] / r['after_s']['mean']:.1f}× | "
              f"{r['agreement'] * 100:.2f} % | "
              + ", ".join(f"{r['score_before'][a]:.4f} / {r['score_after'][a]:.4f}" for a in attacks)
              + f" | {met} |")
    print()
    print(json.dumps({"provenance": prov, "target_s": TARGET_S, "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
