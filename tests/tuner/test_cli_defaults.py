"""Every default `--help` shows is the one that runs, read from its one source: `SearchSettings` for
`tuner.search`, the presets for `tuner.study`, `ExperimentSpec` and `run.start` for `python -m unlearn_core run`,
the recipes and `ExperimentSpec`'s per-dataset rules where a default depends on the dataset. Name lists follow
the registries. Parsers only: nothing trains and no Ray starts."""
from __future__ import annotations

import dataclasses
import inspect
import re

import search_spaces
from tuner import study
from tuner.search import build_parser as search_parser
from tuner.settings import SearchSettings, default_final_seeds, from_args
from unlearn_core.cli_args import shown
from unlearn_core.data import dataset_names
from unlearn_core.run import start
from unlearn_core.spec import ExperimentSpec
from unlearn_core.training import recipe_for

DEFAULT = re.compile(r"\(default (.*)\)$", re.S)


def options(parser, every: bool = True) -> dict:
    """dest → (action, the default its help says); with `every`, each option taking a value says one."""
    out = {}
    for a in parser._actions:
        if not a.option_strings or a.dest == "help":
            continue
        said = DEFAULT.search(a.help)
        if a.const is True:  # store_true: off unless given
            assert a.default is False and not said, a.dest
        elif every:
            assert said, f"{a.option_strings[0]}: its help says no default"
        out[a.dest] = (a, " ".join(said.group(1).split()) if said else None)
    return out


def printed(res, parser) -> None:
    """`--help` printed exactly these helps (argparse only re-wraps them)."""
    assert res.returncode == 0, res.stderr
    text = "".join(res.stdout.split())
    for a in parser._actions:
        assert "".join(a.help.split()) in text, a.dest


def per_dataset(said: str) -> dict:
    """'1.0 on cifar10, cifar100; 0.125 on digits' → {"cifar10": "1.0", "cifar100": "1.0", "digits": "0.125"}."""
    out = {}
    for part in said.split("; "):
        value, _, names = part.rpartition(" on ")
        out.update({n: value.split()[-1] for n in names.split(", ")})
    return out


def check_per_dataset(opts: dict) -> None:
    """width, forget size and training epochs: None, shown per dataset as the spec and the recipes decide."""
    rules = {"width": lambda d: ExperimentSpec(dataset=d).resolved_width,
             "forget_size": lambda d: ExperimentSpec(dataset=d).resolved_forget_size,
             "train_epochs": lambda d: recipe_for(d).epochs}
    for dest, value_of in rules.items():
        action, said = opts[dest]
        assert action.default is None
        assert per_dataset(said) == {d: str(value_of(d)) for d in dataset_names()}, (dest, said)


# --- tuner.search -------------------------------------------------------------------------------------------------
def test_a_bare_search_command_line_gives_the_settings_defaults(tmp_path):
    """Parsed with no options, the CLI yields exactly `SearchSettings`' defaults (its folders resolved)."""
    root = str(tmp_path)
    got = from_args(search_parser().parse_args(["scrub", "--storage", root, "--name", "x"]))
    assert got == SearchSettings(algorithm="scrub", exp_dir=f"{root}/x", store=f"{root}/artifacts",
                                 optuna_url=f"sqlite:///{root}/x/optuna.db", storage=root)


def test_every_search_help_default_is_the_settings_default(in_process):
    from tuner.search import main

    parser = search_parser()
    printed(in_process(main, "--help"), parser)
    opts = options(parser)
    fields = {f.name: f for f in dataclasses.fields(SearchSettings)}
    plural = {"dataset": "datasets", "arch": "archs"}
    for dest, (action, said) in opts.items():
        name = plural.get(dest, dest)
        if action.default is not None and action.const is not True:
            value = list(fields[name].default) if name in plural.values() else fields[name].default
            assert action.default == value and said == shown(value), (dest, action.default, said)
    check_per_dataset(opts)
    assert opts["forget_classes"][1] == shown(fields["forget_classes"].default)
    from tuner.study_storage import default_url

    assert opts["store"][1] == "STORAGE/artifacts"
    assert opts["optuna_storage"][1] == (f"{default_url('/STORAGE/NAME')}; on an object store "
                                         f"{default_url('s3://BUCKET/NAME')}")
    # the finals' seeds: the rule as said, and as default_final_seeds applies it
    n_small, small, n_else = re.fullmatch(r"(\d+) when every dataset is (\w+), else (\d+) as the paper",
                                          opts["final_seeds"][1]).groups()
    assert default_final_seeds([small]) == int(n_small) and default_final_seeds([small, "cifar10"]) == int(n_else)
    assert fields["final_seeds"].default == tuple(range(1, int(n_small) + 1))  # a digits search: seeds 1..3


def test_the_search_gpu_share_said_is_the_one_used():
    from tuner.service import trial_resources

    s = SearchSettings(algorithm="scrub", exp_dir="/x/e", store="/x/a", optuna_url="sqlite:////x/e/optuna.db")
    said = options(search_parser())["gpus_per_trial"][1]
    assert said == f"{trial_resources(s, {'CPU': 8, 'GPU': 1})[1]} if the cluster has GPUs, else 0"
    assert trial_resources(s, {"CPU": 8})[1] == 0


def test_the_search_algorithms_are_the_registered_spaces(monkeypatch):
    (positional,) = [a for a in search_parser()._actions if not a.option_strings]
    assert list(positional.choices) == search_spaces.space_names()
    copy = dataclasses.replace(search_spaces.get_space("scrub"), name="scrub_copy", stage=None)
    monkeypatch.setitem(search_spaces.SPACES, "scrub_copy", copy)
    (positional,) = [a for a in search_parser()._actions if not a.option_strings]
    assert "scrub_copy" in positional.choices
    assert "scrub_copy" in study.method_names()


# --- tuner.study ---------------------------------------------------------------------------------------------------
def test_every_study_help_default_is_the_presets_or_the_runs(in_process):
    parser = study.build_parser()
    printed(in_process(study.main, "--help"), parser)
    opts = options(parser)
    for dest, key in study.OVERRIDES.items():
        action, said = opts[dest]
        assert action.default is None, dest
        for name, preset in study.PRESETS.items():
            value = "the dataset's" if preset[key] is None else shown(preset[key])
            assert f"{name}: {value}" in said, (dest, said)
    for dest in ("split_seed", "cpus_per_task", "storage", "preset"):
        action, said = opts[dest]
        assert said == shown(action.default)
    assert opts["split_seed"][0].default == ExperimentSpec().split_seed
    assert opts["preset"][0].default == study.DEFAULT_PRESET
    assert "all four" not in opts["methods"][0].help


def test_a_study_with_no_overrides_runs_its_presets_values():
    for name, preset in study.PRESETS.items():
        _, settings = study.plan_cells(study.build_parser().parse_args(["--preset", name]), preset)
        for key in study.OVERRIDES.values():
            assert settings[key] == preset[key], (name, key)


def test_study_methods_come_from_the_registry():
    names = study.method_names()
    flat = [n for n in search_spaces.space_names() if search_spaces.get_space(n).kind == "flat"]
    assert set(flat) <= set(names) and "rum" not in names
    assert all(n.startswith("rum_") and n[4:] in flat for n in names if n not in flat)
    for preset in study.PRESETS.values():
        assert set(preset["methods"]) <= set(names)
    (action,) = [a for a in study.build_parser()._actions if a.dest == "methods"]
    assert list(action.choices) == names


# --- python -m unlearn_core run -------------------------------------------------------------------------------------
def run_parser():
    from unlearn_core.__main__ import build_parser

    (sub,) = [a for a in build_parser()._actions if a.dest == "command"]
    return sub.choices["run"]


def test_every_run_help_default_is_the_spec_or_the_drivers(in_process):
    from unlearn_core.__main__ import main

    parser = run_parser()
    printed(in_process(main, "run", "--help"), parser)
    opts = options(parser, every=False)  # --algorithm, --param, --rum-plan are the run CLI's own
    spec = {f.name: f.default for f in dataclasses.fields(ExperimentSpec)}
    keywords = inspect.signature(start).parameters
    for dest in ("dataset", "arch", "split_seed", "forget", "proxy", "seed"):
        action, said = opts[dest]
        assert action.default == spec[dest] and said == shown(spec[dest]), dest
    for dest in ("requests", "ranking_model"):
        action, said = opts[dest]
        assert action.default == keywords[dest].default and said == shown(action.default), dest
    check_per_dataset(opts)
    assert opts["forget_classes"][0].default is None and opts["forget_classes"][1] == shown(spec["forget_classes"])
    assert "--ranking-model" in parser.format_help() and "--selection" not in parser.format_help()


def test_one_parser_class_one_error_line(in_process):
    """tuner.search, tuner.study and unlearn_core's run refuse bad syntax alike: one `error:` line, exit 2."""
    from tuner.search import main as search_main
    from unlearn_core.__main__ import main as run_main

    runs = [in_process(search_main, "scrub", "--objective", "nope"), in_process(study.main, "--methods", "nope"),
            in_process(run_main, "run", "--algorithm", "scrub", "--forget", "nope")]
    for res in runs:
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
        assert "nope" in lines[0] and "--help" in lines[0]
