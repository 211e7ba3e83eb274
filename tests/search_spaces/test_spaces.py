"""Contract tests for `search_spaces`, with real Optuna studies (no mocks)."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

import search_spaces
from search_spaces import SPACES, SearchSpace, flatten_rum, get_space, paper_config, to_config_params, unflatten_rum
from search_spaces.rum import LEVELS, stage_algorithms

optuna.logging.set_verbosity(optuna.logging.WARNING)

REPO = Path(__file__).resolve().parents[2]
N_TRIALS = 20

# The config fields of unlearn_core's dataclasses, written out so that these tests need no torch.
FIELDS = {
    "scrub": {"lr", "epochs", "max_steps", "alpha", "gamma", "temperature", "forget_batch_size",
              "retain_batch_size", "momentum", "weight_decay", "augment"},
    "neggrad_plus": {"lr", "epochs", "beta", "forget_batch_size", "retain_batch_size", "momentum",
                     "weight_decay", "augment"},
    "finetune": {"lr", "epochs", "retain_batch_size", "momentum", "weight_decay", "augment"},
}


def check_fixed(p: dict) -> None:
    assert p["momentum"] == 0.9 and p["weight_decay"] == 5e-4 and p["augment"] is False


def check_scrub(p: dict, *, full: bool = True) -> None:
    assert set(p) == FIELDS["scrub"]
    assert 1e-4 <= p["lr"] <= 1e-1
    assert isinstance(p["epochs"], int) and isinstance(p["max_steps"], int)
    assert 1 <= p["max_steps"] <= p["epochs"] <= 10 and p["epochs"] >= 2
    assert 1e-5 <= p["alpha"] <= 3 and 1e-5 <= p["gamma"] <= 3
    if full:
        assert p["temperature"] in (1, 2, 4, 8)
        assert p["forget_batch_size"] in (16, 32, 64, 128, 256, 512)
        assert p["retain_batch_size"] in (64, 128, 256)
    else:
        assert (p["temperature"], p["forget_batch_size"], p["retain_batch_size"]) == (4.0, 256, 256)
    check_fixed(p)


def check_neggrad_plus(p: dict, *, full: bool = True) -> None:
    assert set(p) == FIELDS["neggrad_plus"]
    assert 1e-4 <= p["lr"] <= 1e-1
    assert isinstance(p["epochs"], int) and 2 <= p["epochs"] <= 10
    assert 0.5 <= p["beta"] < 1
    if full:
        assert p["forget_batch_size"] in (64, 128, 256, 512)
        assert p["retain_batch_size"] in (64, 128, 256)
    else:
        assert (p["forget_batch_size"], p["retain_batch_size"]) == (256, 256)
    check_fixed(p)


def check_finetune(p: dict) -> None:
    assert set(p) == FIELDS["finetune"]
    assert 1e-3 <= p["lr"] <= 1e-1
    assert isinstance(p["epochs"], int) and 2 <= p["epochs"] <= 10
    assert p["retain_batch_size"] == 256
    check_fixed(p)


def check_any(p: dict, **_) -> None:
    """What every flat config holds: plain values, the fixed SGD settings. (Spaces without a check of their own
    here have one in their own test file; `test_configs_build_unlearn_core_configs` builds them all.)"""
    assert all(isinstance(v, (str, int, float, bool)) for v in p.values())
    check_fixed(p)


CHECKS = {"scrub": check_scrub, "neggrad_plus": check_neggrad_plus, "finetune": lambda p, **_: check_finetune(p)}


def check_plan(plan: list, allowed: tuple[str, ...]) -> None:
    assert len(plan) == 3
    for step in plan:
        assert set(step) == {"algorithm", "params"} and step["algorithm"] in allowed
        algorithm, p = step["algorithm"], step["params"]
        if algorithm == "none":
            assert p == {}
        else:
            CHECKS.get(algorithm, check_any)(p, full=False)


ALLOWED = {"rum_scrub": ("scrub",), "rum_neggrad_plus": ("neggrad_plus",), "rum": stage_algorithms()}


def check_config(space: SearchSpace, cfg: dict) -> None:
    if space.kind == "flat":
        CHECKS.get(space.algorithm, check_any)(cfg)
    else:
        assert set(cfg) == {"plan"}
        check_plan(cfg["plan"], ALLOWED[space.name])


def in_distribution(value, dist) -> bool:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return value in dist.choices
    return dist.low <= value <= dist.high


def run_study(space: SearchSpace, n_trials: int, enqueue=()) -> tuple[optuna.Study, list[dict], list[dict]]:
    """`n_trials` random trials; returns the study, Ray-style configs and their config kwargs."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for point in enqueue:
        study.enqueue_trial(point)
    ray_configs, kwargs = [], []

    def objective(trial: optuna.Trial) -> float:
        returned = space.define(trial)
        assert isinstance(returned, dict) and all(isinstance(k, str) for k in returned)
        assert all(isinstance(v, (str, int, float, bool)) for v in returned.values())
        config = {**trial.params, **returned}   # what OptunaSearch hands the trainable
        ray_configs.append(config)
        kwargs.append(to_config_params(space.name, config))
        return sum(math.log(v) for v in trial.params.values() if isinstance(v, float) and v > 0)

    study.optimize(objective, n_trials=n_trials)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    return study, ray_configs, kwargs


@pytest.mark.parametrize("name", sorted(SPACES))
def test_random_trials_give_valid_configs(name):
    space = get_space(name)
    study, ray_configs, kwargs = run_study(space, N_TRIALS)
    assert len(kwargs) == N_TRIALS
    for trial, ray_config, cfg in zip(study.trials, ray_configs, kwargs):
        check_config(space, cfg)
        # Optuna's params alone (no constants), Ray's config and a replay of the result agree.
        assert to_config_params(space, trial.params) == cfg
        assert to_config_params(name, {**ray_config, "seed": 3, "dataset": "cifar10"}) == cfg
        for pname, value in trial.params.items():
            assert in_distribution(value, trial.distributions[pname])


@pytest.mark.parametrize("name", sorted(SPACES))
def test_one_name_one_distribution(name):
    """A parameter name keeps its distribution in every trial (so TPE/NSGA-II can model it)."""
    study, _, _ = run_study(get_space(name), N_TRIALS)
    seen: dict[str, optuna.distributions.BaseDistribution] = {}
    for trial in study.trials:
        for pname, dist in trial.distributions.items():
            assert seen.setdefault(pname, dist) == dist, pname


def test_rum_spaces_share_distributions():
    """`low_scrub_lr` etc. mean the same thing in `rum_scrub`, `rum_neggrad_plus` and `rum`."""
    dists: dict[str, dict] = {}
    for name in ("rum_scrub", "rum_neggrad_plus", "rum"):
        study, _, _ = run_study(get_space(name), 60 if name == "rum" else 2)
        for trial in study.trials:
            for pname, dist in trial.distributions.items():
                if not pname.endswith("_algorithm"):
                    assert dists.setdefault(pname, dist) == dist, pname
    assert {"low_scrub_alpha", "mid_ng_forget_weight", "high_ft_lr"} <= set(dists)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_paper_configs_enqueue_unchanged(name):
    space = get_space(name)
    assert space.paper_configs
    study, _, kwargs = run_study(space, len(space.paper_configs) + 2, enqueue=space.paper_configs)
    for point, trial, cfg in zip(space.paper_configs, study.trials, kwargs):
        assert trial.params == point
        for pname, value in point.items():
            assert in_distribution(value, trial.distributions[pname]), (pname, value)
        check_config(space, cfg)


def test_paper_config_rows():
    scrub = to_config_params("scrub", paper_config("scrub", "cifar10", "vgg16_bn"))
    row = (scrub["alpha"], scrub["gamma"], scrub["max_steps"], scrub["epochs"], scrub["lr"])
    assert row == (0.1, 0.005, 7 + 1, 10, 0.01)   # Table C.2's max steps + 1: what the RUM code ran
    assert paper_config("scrub", "cifar100", "resnet18")["max_steps"] == 5 + 1
    assert paper_config("scrub", "digits", "mlp") == paper_config("scrub", "cifar10", "resnet18")
    assert paper_config("scrub", "cifar10", "resnet18")["max_steps"] == 4 + 1
    assert len(get_space("scrub").paper_configs) == 4

    assert to_config_params("neggrad_plus", paper_config("neggrad_plus", "cifar10", "resnet18"))["beta"] == 0.9
    ng = to_config_params("neggrad_plus", paper_config("neggrad_plus", "cifar100", "vgg16_bn"))
    assert (ng["beta"], ng["epochs"], ng["lr"]) == (0.95, 10, 0.01)

    plan = to_config_params("rum_neggrad_plus", paper_config("rum_neggrad_plus", "cifar10", "resnet18"))["plan"]
    assert [(s["params"]["beta"], s["params"]["epochs"], s["params"]["lr"]) for s in plan] == [
        (0.9, 5, 0.01), (0.9, 5, 0.01), (0.9, 10, 0.01)]
    plan = to_config_params("rum_scrub", paper_config("rum_scrub", "cifar10", "vgg16_bn"))["plan"]
    assert [(s["params"]["alpha"], s["params"]["gamma"], s["params"]["max_steps"], s["params"]["epochs"])
            for s in plan] == [(0.1, 0.005, 7 + 1, 10)] * 3
    plan = to_config_params("rum", paper_config("rum", "cifar10", "resnet18"))["plan"]
    assert [s["algorithm"] for s in plan] == ["none", "finetune", "salun"]
    assert [(s["params"]["lr"], s["params"]["epochs"]) for s in plan[1:]] == [(0.1, 10), (0.1, 5)]  # RUM script
    assert plan[2]["params"]["ratio"] == 0.5
    plan = to_config_params("rum", paper_config("rum", "cifar100", "resnet18"))["plan"]
    assert [s["algorithm"] for s in plan] == ["neggrad_plus"] * 3

    # A copy: mutating it leaves the space alone.
    paper_config("scrub", "cifar10", "resnet18")["lr"] = 1.0
    assert paper_config("scrub", "cifar10", "resnet18")["lr"] == 0.01


# --- the paper protocol: paper points are what the paper ran (docs/protocol.md) ----------------------------------

# Table C.2 as printed (alpha, gamma, max steps; 10 unlearn epochs at lr 0.01), copied from the paper's Appendix C.
TABLE_C2 = {
    ("cifar10", "resnet18"): (0.9, 0.9, 4),
    ("cifar10", "vgg16_bn"): (0.1, 0.005, 7),
    ("cifar100", "resnet18"): (0.9, 0.9, 5),
    ("cifar100", "vgg16_bn"): (0.9, 0.9, 7),
}
# Table C.3 (NegGrad+ beta and unlearn rate, one value per dataset) with Table C.4's NG epochs 5 -> 5 -> 10:
# (dataset, arch) -> [(beta, lr, epochs)] for low, mid, high.
RUM_NEGGRAD_PLUS_PAPER = {
    ("cifar10", "resnet18"): [(0.9, 0.01, 5), (0.9, 0.01, 5), (0.9, 0.01, 10)],
    ("cifar10", "vgg16_bn"): [(0.9, 0.01, 5), (0.9, 0.01, 5), (0.9, 0.01, 10)],
    ("cifar100", "resnet18"): [(0.95, 0.01, 5), (0.95, 0.01, 5), (0.95, 0.01, 10)],
    ("cifar100", "vgg16_bn"): [(0.95, 0.01, 5), (0.95, 0.01, 5), (0.95, 0.01, 10)],
}
# RUM:main_rum_proxy.py's plan, the CLI's default: (beta, lr, epochs) for low, mid, high.
RUM_SCRIPT_PLAN = [(0.99, 0.01, 5), (0.97, 0.01, 5), (0.97, 0.001, 10)]


def _ng_rows(plan: list) -> list:
    return [(s["params"]["beta"], s["params"]["lr"], s["params"]["epochs"]) for s in plan]


@pytest.mark.parametrize("model", sorted(TABLE_C2))
def test_scrub_paper_points_run_table_c2_max_steps_plus_one(model):
    alpha, gamma, table_max_steps = TABLE_C2[model]
    scrub = to_config_params("scrub", paper_config("scrub", *model))
    assert (scrub["alpha"], scrub["gamma"], scrub["lr"], scrub["epochs"]) == (alpha, gamma, 0.01, 10)
    assert scrub["max_steps"] == table_max_steps + 1 <= scrub["epochs"]
    plan = to_config_params("rum_scrub", paper_config("rum_scrub", *model))["plan"]
    assert [(s["params"]["alpha"], s["params"]["gamma"], s["params"]["max_steps"], s["params"]["epochs"])
            for s in plan] == [(alpha, gamma, table_max_steps + 1, 10)] * 3


def test_c10_r18_scrub_paper_point_is_a_valid_config():
    from unlearn_core.scrub import ScrubConfig
    from unlearn_core.unlearning import make_config

    point = paper_config("scrub", "cifar10", "resnet18")
    assert point["max_steps"] == 5   # Table C.2: 4, run by the RUM code as 4 + 1 max passes
    cfg = make_config("scrub", to_config_params("scrub", point))
    assert isinstance(cfg, ScrubConfig) and (cfg.max_steps, cfg.epochs) == (5, 10)


def test_c10_r18_scrub_paper_point_runs_five_max_passes(tmp_path):
    """A real SCRUB run of the C10-R18 paper point (tiny model and sets): 5 of its 10 epochs have a max pass."""
    import numpy as np
    import torch

    from unlearn_core.spec import ExperimentSpec
    from unlearn_core.unlearning import create_unlearner, make_config
    from unlearn_core.workspace import Workspace

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ws = Workspace(ExperimentSpec(dataset="digits", arch="resnet18", width=0.125, seed=0, device="cpu",
                                      store=str(tmp_path)))
        ids = np.random.default_rng(0).permutation(len(ws.train))
        forget, retain = ws.train.subset(ids[:64]), ws.train.subset(ids[64:320])
        cfg = make_config("scrub", to_config_params("scrub", paper_config("scrub", "cifar10", "resnet18")))
        unlearner = create_unlearner("scrub", ws.new_model(), forget, retain, cfg, seed=0)
        stats = [unlearner.next_epoch() for _ in range(cfg.epochs)]
    finally:
        torch.set_num_threads(threads)
    assert all("retain_loss" in s for s in stats)
    assert [i for i, s in enumerate(stats) if "forget_kl" in s] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("model", sorted(RUM_NEGGRAD_PLUS_PAPER))
def test_rum_neggrad_plus_paper_plan_is_tables_c3_c4(model):
    plan = to_config_params("rum_neggrad_plus", paper_config("rum_neggrad_plus", *model))["plan"]
    assert [s["algorithm"] for s in plan] == ["neggrad_plus"] * 3
    assert _ng_rows(plan) == RUM_NEGGRAD_PLUS_PAPER[model]
    assert _ng_rows(search_spaces.rum.RUM_NEGGRAD_PLUS_PLANS[model]) == RUM_NEGGRAD_PLUS_PAPER[model]
    # The full RUM space starts from the same plan on CIFAR-100 (CIFAR-10: NegGrad+ for SalUn, below).
    if model[0] == "cifar100":
        assert to_config_params("rum", paper_config("rum", *model))["plan"] == plan


def test_rum_script_plan_kept_by_name():
    from unlearn_core.rum import SCRIPT_NEGGRAD_PLUS_PLAN

    script = search_spaces.rum.RUM_SCRIPT_NEGGRAD_PLUS_PLAN
    assert _ng_rows(script) == RUM_SCRIPT_PLAN
    assert [dict(s) for s in script] == [{"algorithm": s["algorithm"], "params": dict(s["params"])}
                                         for s in SCRIPT_NEGGRAD_PLUS_PLAN]   # the CLI's default, unchanged
    space = get_space("rum_neggrad_plus")
    point = flatten_rum(script)
    assert point in space.paper_configs and space.paper_configs[0] != point   # an extra point, not the first
    assert point not in space.paper_table.values()


def test_rum_cifar10_start_is_the_papers_plan():
    """The full RUM space starts CIFAR-10 from the paper's none -> finetune -> SalUn with the RUM script's
    settings, the plan unlearn_core names PAPER_CIFAR10_PLAN (`--rum-plan paper_cifar10`); no substitution."""
    from unlearn_core.rum import PAPER_CIFAR10_PLAN, PLANS

    plan = unflatten_rum(paper_config("rum", "cifar10", "resnet18"))
    assert plan == search_spaces.rum.RUM_CIFAR10_PLAN == [dict(s) for s in PAPER_CIFAR10_PLAN]
    assert plan == [{"algorithm": "none", "params": {}}, {"algorithm": "finetune", "params": {"lr": 0.1, "epochs": 10}},
                    {"algorithm": "salun", "params": {"lr": 0.1, "epochs": 5, "ratio": 0.5}}]
    assert PLANS["paper_cifar10"] is PAPER_CIFAR10_PLAN
    assert paper_config("rum", "cifar10", "vgg16_bn") == paper_config("rum", "cifar10", "resnet18")
    assert get_space("rum").paper_configs[0] == flatten_rum(plan)   # enqueued first


@pytest.mark.parametrize("name", ["rum_scrub", "rum_neggrad_plus", "rum"])
def test_flatten_unflatten_round_trip(name):
    space = get_space(name)
    for point in space.paper_configs:
        plan = unflatten_rum(point)
        assert flatten_rum(plan) == point
        assert unflatten_rum(flatten_rum(plan)) == plan
    study, _, kwargs = run_study(space, N_TRIALS)
    for trial, cfg in zip(study.trials, kwargs):
        plan = unflatten_rum(trial.params)
        back = flatten_rum(plan)
        assert set(back) == set(trial.params)
        for key, value in trial.params.items():
            assert back[key] == (pytest.approx(value, rel=1e-9) if isinstance(value, float) else value)
        full = cfg["plan"]   # with the constants: still an exact inverse
        assert unflatten_rum(flatten_rum(full)) == full
        assert [s["algorithm"] for s in full] == [trial.params[f"{lv}_algorithm"] for lv in LEVELS]


def test_flatten_unflatten_errors():
    with pytest.raises(ValueError, match="mid_algorithm"):
        unflatten_rum({"low_algorithm": "none", "high_algorithm": "none"})
    with pytest.raises(ValueError, match="sallun"):
        unflatten_rum({"low_algorithm": "none", "mid_algorithm": "sallun", "high_algorithm": "none"})
    with pytest.raises(ValueError, match="3 steps"):
        flatten_rum([{"algorithm": "none", "params": {}}])
    with pytest.raises(ValueError, match="no params"):
        flatten_rum([{"algorithm": "none", "params": {"lr": 0.1}}] * 3)


def test_to_config_params_missing_param():
    with pytest.raises(ValueError, match="'scrub'.*lr"):
        to_config_params("scrub", {"epochs": 10})


def test_get_space_unknown_lists_valid_names():
    assert search_spaces.space_names() == sorted(SPACES)
    assert {"finetune", "neggrad_plus", "rum", "rum_neggrad_plus", "rum_scrub", "scrub"} <= set(SPACES)
    with pytest.raises(ValueError) as err:
        get_space("sallun")
    assert "sallun" in str(err.value)
    assert ", ".join(sorted(SPACES)) in str(err.value)


def test_each_space_file_registers_itself():
    """No hand-kept table: the space files fill SPACES, and every flat space with a Stage is a RUM stage choice."""
    from search_spaces.search_space import stage_spaces

    assert all(SPACES[name].name == name for name in SPACES)
    stages = stage_spaces()
    assert list(stages) == sorted(stages) and stage_algorithms() == ("none", *stages)
    assert {"finetune", "neggrad_plus", "scrub"} <= set(stages)
    assert all(space.kind == "flat" and space.algorithm == algorithm for algorithm, space in stages.items())
    aliases = [space.stage.alias for space in stages.values()]
    assert len(set(aliases)) == len(aliases)
    with pytest.raises(ValueError, match="registered twice"):
        search_spaces.search_space.register(get_space("scrub"))


def test_search_space_validates():
    from search_spaces.search_space import Stage

    with pytest.raises(ValueError, match="kind"):
        SearchSpace("x", "scrub", lambda t: {}, (), "nested")
    with pytest.raises(ValueError, match="algorithm"):
        SearchSpace("x", "sal un", lambda t: {}, (), "flat")
    with pytest.raises(ValueError, match="only a flat space"):
        SearchSpace("x", "rum", lambda t: {}, (), "rum", stage=Stage("x", lambda t, p, full: {}))
    with pytest.raises(ValueError, match="exactly when"):
        SearchSpace("x", "scrub", lambda t: {}, (), "rum")
    with pytest.raises(ValueError, match="paper_table"):
        SearchSpace("x", "scrub", lambda t: {}, ({"lr": 0.1},), "flat", {("cifar10", "resnet18"): {"lr": 0.2}})


@pytest.mark.parametrize("name", sorted(SPACES))
def test_configs_build_unlearn_core_configs(name):
    """The hand-off works on the real dataclasses: every field is given, and the config's checks pass."""
    import dataclasses

    from unlearn_core.unlearning import ALGORITHMS, make_config

    space = get_space(name)
    _, _, sampled = run_study(space, 5)
    for cfg in [to_config_params(name, point) for point in space.paper_configs] + sampled:
        steps = cfg["plan"] if space.kind == "rum" else [{"algorithm": space.algorithm, "params": cfg}]
        for step in steps:
            if step["algorithm"] != "none":
                fields = {f.name for f in dataclasses.fields(ALGORITHMS.get(step["algorithm"]).Config)}
                assert set(step["params"]) == fields, step
                make_config(step["algorithm"], step["params"])
    if space.kind == "rum":
        make_config("rum", {"plan": to_config_params(name, space.paper_configs[0])["plan"]})


def test_import_stays_light():
    code = ("import sys, search_spaces; "
            "print(sorted(m for m in ('torch', 'ray', 'unlearn_core') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_rum_vocabulary_matches_unlearn_core():
    """search_spaces may not import unlearn_core's torch modules, so the RUM words live in both: kept equal here."""
    from search_spaces import rum as space_rum
    from unlearn_core import rum as core_rum

    assert space_rum.LEVELS == core_rum.LEVELS
    # every unlearn_core algorithm RUM can run in a stage has a space that can search it there, and back
    assert space_rum.stage_algorithms() == core_rum.stage_algorithms()
