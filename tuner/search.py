"""`python -m tuner.search <algorithm>`: the hyperparameter-search service.

For each (dataset, arch): build originals + retrains once (prepare stage, Ray tasks), then run Ray Tune
trials with an Optuna define-by-run space (warm-started with the paper's configs, study in Optuna storage
under the experiment folder) and ASHA over unlearning epochs, then re-run the top configs on more seeds and
write `best_configs.{json,md}`, `trials.csv` and the Optuna study. With no options it runs a small search on
scikit-learn's bundled digits on a local Ray and finishes in a few minutes on a 2-core CPU. The options and
their defaults are `tuner.settings.SearchSettings`' fields.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Optional, Sequence

from unlearn_core.errors import UnlearnError


def build_parser() -> argparse.ArgumentParser:
    """The CLI, made from `SearchSettings`: its experiment fields through `add_experiment_args`, every field with
    `flag` metadata as an option with the field's default and help; the algorithms are the registered spaces."""
    import search_spaces
    from unlearn_core.cli_args import Parser, add_experiment_args, add_flag

    from .settings import SearchSettings, experiment_defaults

    p = Parser(
        prog="python -m tuner.search",
        description="Search unlearning hyperparameters that make an unlearned model behave like one retrained "
                    "from scratch (maximize ToW / ToW-MIA), as Ray Tune trials with Optuna search spaces.")
    p.add_argument("algorithm", choices=search_spaces.space_names(), help="search space / algorithm to tune")
    add_experiment_args(p, experiment_defaults(), several=True, texts={"store": "STORAGE/artifacts"})
    groups: dict = {}
    for f in dataclasses.fields(SearchSettings):
        if "cli" not in f.metadata:
            continue
        kw = dict(f.metadata["cli"])
        group, help, said = kw.pop("group"), kw.pop("help"), kw.pop("shown", None)
        if group not in groups:
            groups[group] = p.add_argument_group(group)
        g = groups[group]
        option = "--" + f.name.replace("_", "-")
        default = kw.pop("default", f.default)
        if default is False:
            kw["action"] = "store_true"
        elif default is not None:
            kw.setdefault("type", type(default))
        add_flag(g, option, help, default, said, **kw)
    add_flag(groups["outputs"], "--optuna-storage", "Optuna storage URL: sqlite:////ABS/PATH.db, postgresql://..., "
                                                    "mysql://... or journal:///ABS/PATH.log (a journal file, safe on "
                                                    "NFS)", said=study_storage_rule())
    add_flag(groups["outputs"], "--name", "experiment name: one folder name (letters, digits, -_.)",
             said="<algorithm>-<date-time>")
    return p


def study_storage_rule() -> str:
    """Where a search's study goes by default, in words, from `study_storage.default_url` itself."""
    from .study_storage import default_url

    return f"{default_url('/STORAGE/NAME')}; on an object store {default_url('s3://BUCKET/NAME')}"


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
    except KeyboardInterrupt:  # before the experiment was claimed: nothing to resume
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    from unlearn_core.errors import one_line_warnings

    one_line_warnings()
    sys.exit(main())
