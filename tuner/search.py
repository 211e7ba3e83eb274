"""`python -m tuner.search <algorithm>`: the hyperparameter-search service.

For each (dataset, arch): build originals + retrains once (prepare stage, Ray tasks), then run Ray Tune
trials with an Optuna define-by-run space (warm-started with the paper's configs, study in Optuna storage
under the experiment folder) and ASHA over unlearning epochs, then re-run the top configs on more seeds and
write `best_configs.{json,md}`, `trials.csv` and the Optuna study. With no options it runs a small search on
scikit-learn's bundled digits on a local Ray and finishes in a few minutes on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from unlearn_core.errors import UnlearnError

ALGORITHMS = ("scrub", "neggrad_plus", "rum_scrub", "rum_neggrad_plus", "rum")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: a bad option gives `prog: error: ...` alone, not the usage block first,
    like every other error of this CLI (one line on stderr, exit 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from unlearn_core.cli_args import add_experiment_args

    from .settings import DEFAULT_STORAGE

    p = _Parser(
        prog="python -m tuner.search",
        description="Search unlearning hyperparameters that make an unlearned model behave like one retrained "
                    "from scratch (maximize ToW / ToW-MIA), as Ray Tune trials with Optuna search spaces.")
    p.add_argument("algorithm", choices=ALGORITHMS, help="search space / algorithm to tune")
    # The paper's forget set by default: the memorization mix (where the most memorized third makes unlearning
    # hard); a random set is so easy that every config scores about the same.
    add_experiment_args(p, several=True, forget_default="mix", store_help="artifact store root (default: STORAGE/artifacts)")
    g = p.add_argument_group("search")
    g.add_argument("--objective", choices=("tow", "tow_mia", "both"), default="both",
                   help="maximize ToW, ToW-MIA, or both (multi-objective, Pareto front); default both")
    g.add_argument("--num-samples", type=int, default=16,
                   help="trials per (dataset, arch) (default 16; from 16 on, every paper row is tried first)")
    g.add_argument("--search-seed", type=int, default=0,
                   help="model seed of every search trial (original, retrain, forget set, unlearning) (default 0)")
    g.add_argument("--final-seeds", type=int, default=None, metavar="N",
                   help="fresh seeds each finalist and the paper's config are re-run on, never the search seed "
                        "(default 5 on CIFAR as the paper, 3 on digits)")
    g.add_argument("--top-k", type=int, default=2, help="finalists per (dataset, arch), besides the paper's config")
    g.add_argument("--sampler-seed", type=int, default=0, help="seed of the Optuna sampler")
    g.add_argument("--points", default=None, metavar="FILE.json",
                   help="extra configs to evaluate first: a JSON list of points in the space's suggested names, "
                        "e.g. [{\"lr\": 0.01, \"epochs\": 3, ...}] (tried before the paper's config)")
    g = p.add_argument_group("resources and cluster")
    g.add_argument("--gpus-per-trial", type=float, default=None,
                   help="GPU fraction per trial, e.g. 0.25 = 4 trials share a GPU (default: 0.25 if the cluster "
                        "has GPUs, else 0)")
    g.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs per trial (default 1)")
    g.add_argument("--max-concurrent", type=int, default=None,
                   help="most trials running at once (default: what the cluster's CPUs/GPUs allow)")
    g.add_argument("--address", default=None, help="Ray cluster to join: auto or HOST:PORT (default: start a local Ray)")
    g.add_argument("--local-gpus", type=float, default=None,
                   help="logical GPUs of the local Ray started without --address (default: detected); "
                        "lets fractional-GPU scheduling be tried on a CPU-only machine")
    g.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard (local Ray only)")
    g.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial (from its saved state)")
    g = p.add_argument_group("outputs")
    g.add_argument("--storage", default=DEFAULT_STORAGE,
                   help="experiment root: a folder or a URI (s3://, gs://, an NFS path) (default ./runs)")
    g.add_argument("--optuna-storage", default=None,
                   help="Optuna storage URL (default: sqlite under the experiment folder; across nodes use "
                        "postgresql://... or a journal file on NFS)")
    g.add_argument("--name", default=None, help="experiment name (default: <algorithm>-<date-time>)")
    g.add_argument("--resume", action="store_true", help="continue the interrupted experiment --name")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from .service import run_search
        from .settings import from_args

        return run_search(from_args(args))
    except UnlearnError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    except ValueError as e:  # search_spaces raises plain ValueError for unknown names
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
