"""`python -m unlearn_core run`, as a user runs it, on digits with a width-0.125 ResNet-18.

The first run and one refused run go through the real entry point (a subprocess); the other runs call the same
`main(argv)` in this process, with stdout and stderr captured the same way, and skip an interpreter start each.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECORD_KEYS = ("forget_acc", "retain_acc", "val_acc", "test_acc", "mia", "tow", "tow_mia", "retrain",
               "unlearn_seconds", "retrain_seconds", "params", "spec", "algorithm", "seed", "env", "device",
               "diverged", "history", "forget_ids_sha", "requests", "request_count")
METRICS = ("forget_acc", "retain_acc", "val_acc", "test_acc", "mia")
OPTIONS = ("--algorithm", "--rum-plan", "--proxy", "--requests", "--ranking-model", "--dataset", "--data-dir",
           "--download", "--arch", "--width", "--param", "--seed",
           "--split-seed", "--forget", "--forget-size", "--forget-classes", "--store", "--device",
           "--train-epochs", "--precision", "--memory-format", "--json")
TINY = ["--dataset", "digits", "--arch", "resnet18", "--width", "0.125", "--device", "cpu"]


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    # One thread per process: these runs are tiny, and on a shared 2-core runner OpenMP threads stall each other.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "unlearn_core", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def run_main(in_process):
    """`run_main(*argv)`: `python -m unlearn_core ARGV` in this process: .returncode, .stdout, .stderr."""
    from unlearn_core.__main__ import main

    # the run sets torch's threads to the machine's CPUs: one, as in `cli`
    return lambda *argv: in_process(main, *argv, env={"OMP_NUM_THREADS": "1"})


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else set()


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    res = cli("run", "--algorithm", "scrub", *TINY, "--train-epochs", "3", "--param", "epochs=2",
              "--param", "max_steps=1,retain_batch_size=128", "--store", str(store), "--json")
    return store, res


def test_run_json_record(first_run):
    store, res = first_run
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)  # stdout holds the record and nothing else
    for k in RECORD_KEYS:
        assert k in rec, k
    for k in METRICS:
        assert k in rec["retrain"], k
        assert isinstance(rec[k], float)
    assert 0 <= rec["forget_acc"] <= 100 and 0 <= rec["mia"] <= 1 and 0 <= rec["tow"] <= 1
    assert rec["retrain"]["test_acc"] > 50, "3 epochs on digits should give a useful retrained model"
    assert rec["params"]["epochs"] == 2 and rec["params"]["max_steps"] == 1
    assert rec["params"]["retain_batch_size"] == 128 and rec["params"]["alpha"] == 0.9  # the rest: defaults
    assert rec["algorithm"] == "scrub" and rec["seed"] == 0 and rec["device"] == "cpu" and rec["diverged"] is None
    assert rec["spec"]["width"] == 0.125 and rec["spec"]["forget_size"] == 90
    assert rec["spec"]["precision"] == "fp32" and rec["spec"]["memory_format"] == "channels_last"  # the CPU's, resolved
    assert len(rec["history"]) == 2
    assert rec["request_count"] == 1 and len(rec["requests"]) == 1 and rec["requests"][0]["tow"] == rec["tow"]
    assert {"torch", "numpy", "sklearn", "python"} <= set(rec["env"])
    # progress on stderr: both models trained, then the unlearning epochs
    assert "training original" in res.stderr and "training retrain" in res.stderr
    assert "scrub epoch 2/2" in res.stderr
    assert files_under(store), "nothing was cached in the store"


def test_second_run_reuses_the_store_and_prints_a_table(first_run, run_main):
    store, first = first_run
    before = files_under(store)
    res = run_main("run", "--algorithm", "neggrad_plus", *TINY, "--train-epochs", "3", "--param", "epochs=1",
                   "--store", str(store))
    assert res.returncode == 0, res.stderr
    assert "training" not in res.stderr  # neither the original nor the retrain is trained again
    assert "loaded from the store" in res.stderr
    assert "neggrad_plus epoch 1/1" in res.stderr
    assert files_under(store) == before
    out = res.stdout
    for word in ("unlearned", "retrained", "forget acc", "retain acc", "val acc", "test acc", "MIA", "ToW",
                 "ToW-MIA", "seconds", "device", "fp32, channels_last"):
        assert word in out, word
    # the retrained column is the cached retrain of the first run
    retrain = json.loads(first.stdout)["retrain"]
    row = next(line for line in out.splitlines() if line.startswith("test acc"))
    assert row.split()[-1] == f"{retrain['test_acc']:.2f}"


def test_diverged_run_is_a_result_not_an_error(first_run, run_main):
    store, _ = first_run
    res = run_main("run", "--algorithm", "neggrad_plus", *TINY, "--train-epochs", "3", "--store", str(store),
                   "--json", "--param", "beta=0.2,lr=1.0,epochs=2,forget_batch_size=32,retain_batch_size=64")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and "diverged" in res.stderr
    rec = json.loads(res.stdout)
    # Changed on purpose (issue #11): `diverged` names the request, and a diverged request scores 0.
    assert set(rec["diverged"]) == {"request", "reason", "epoch", "value"} and rec["diverged"]["request"] == 1
    assert rec["diverged"]["epoch"] in (0, 1) and len(rec["history"]) == rec["diverged"]["epoch"]
    assert rec["tow"] == rec["tow_mia"] == 0.0


BAD_INPUTS = {
    "unknown algorithm": (["--algorithm", "scrubb"], "scrubb"),
    "unknown dataset": (["--dataset", "mnist"], "mnist"),
    "unknown arch": (["--arch", "resnet50"], "resnet50"),
    "beta above 1": (["--algorithm", "neggrad_plus", "--param", "beta=1.5"], "beta"),
    "negative lr": (["--param", "lr=-1"], "lr"),
    "max_steps above epochs": (["--param", "max_steps=5", "--param", "epochs=2"], "max_steps"),
    "unknown hyperparameter": (["--param", "bogus=1"], "valid: lr, epochs, max_steps"),
    "malformed param": (["--param", "lr"], "NAME=VALUE"),
    "zero width": (["--width", "0"], "width"),
    "imagefolder without data dir": (["--dataset", "imagefolder"], "data-dir"),
    "imagefolder with a missing data dir": (["--dataset", "imagefolder", "--data-dir", "/nonexistent/x"],
                                            "does not exist"),
    "forget set larger than the training split": (["--forget-size", "5000"], "5000"),
    "forget class that does not exist": (["--forget", "class", "--forget-classes", "12"], "12"),
    "rum plan with an unknown algorithm": (["--algorithm", "rum", "--rum-plan", "none,sallun,scrub"], "sallun"),
    "rum plan with an unknown parameter": (["--algorithm", "rum", "--rum-plan", "none,finetune:bogus=1,scrub"],
                                           "bogus"),
    "rum with --param": (["--algorithm", "rum", "--param", "lr=0.1"], "--rum-plan"),
    "unknown proxy": (["--algorithm", "rum", "--proxy", "loss"], "loss"),
    "more requests than the pool allows": (["--requests", "20", "--forget-size", "90"], "request"),
    "bad ranking model": (["--ranking-model", "original"], "original"),
    "unknown precision": (["--precision", "fp16"], "fp16"),
}


def _argv(case: str, store) -> list[str]:
    extra, _ = BAD_INPUTS[case]
    opts = {"--algorithm": "scrub", "--dataset": "digits", "--arch": "resnet18", "--width": "0.125",
            "--train-epochs": "1", "--device": "cpu"}
    rest = []
    it = iter(extra)
    for a in it:
        if a in opts:
            opts[a] = next(it)
        else:
            rest.append(a)
    return ["run", *(x for kv in opts.items() for x in kv), *rest, "--store", str(store), "--json"]


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_error_line_and_writes_nothing(case, tmp_path, run_main):
    _, needle = BAD_INPUTS[case]
    store = tmp_path / "store"
    res = run_main(*_argv(case, store))
    rc, out, err = res.returncode, res.stdout, res.stderr
    assert rc == 2, (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert out == ""
    assert not store.exists() or files_under(store) == set(), "a refused run wrote to the store"


def test_bad_input_through_the_real_entry_point(tmp_path):
    res = cli(*_argv("negative lr", tmp_path / "store"), timeout=300)
    assert res.returncode == 2 and res.stdout == "", res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "lr" in lines[0], res.stderr


def test_help_mentions_every_option(run_main):
    top = run_main("--help")
    assert top.returncode == 0 and "run" in top.stdout
    res = run_main("run", "--help")
    assert res.returncode == 0
    for opt in OPTIONS:
        assert opt in res.stdout, opt
    for name in ("scrub", "neggrad_plus", "finetune", "digits", "cifar10", "cifar100", "imagefolder", "vgg16_bn",
                 "beta", "max_steps", "temperature"):
        assert name in res.stdout, name


def test_every_option_has_help():
    from unlearn_core.__main__ import build_parser

    parser = build_parser()
    run = parser._subparsers._group_actions[0].choices["run"]
    documented = set()
    for action in run._actions:
        if action.option_strings and "-h" not in action.option_strings:
            assert action.help and len(action.help) > 15, action.option_strings
            documented.update(action.option_strings)
    assert documented == set(OPTIONS)


def test_sequential_requests_and_rum_in_one_store(first_run, run_main):
    """--requests 2 reports two requests against their retrains; RUM reports its three stages (reuses the store)."""
    store, _ = first_run
    seq = run_main("run", "--algorithm", "neggrad_plus", *TINY, "--train-epochs", "3", "--param", "epochs=1",
                   "--requests", "2", "--forget-size", "60", "--store", str(store), "--json")
    assert seq.returncode == 0, seq.stderr
    rec = json.loads(seq.stdout)
    assert [s["request"] for s in rec["requests"]] == [1, 2] and rec["request_count"] == 2
    assert rec["requests"][1]["excluded_size"] == 60  # request 2's retain set excludes request 1's forget set
    assert all(0 <= s["tow"] <= 1 for s in rec["requests"])
    rum = run_main("run", "--algorithm", "rum", *TINY, "--train-epochs", "3", "--forget", "mix", "--forget-size",
                   "60", "--rum-plan", "none,finetune:epochs=1,neggrad_plus:beta=0.97;epochs=1", "--store", str(store))
    assert rum.returncode == 0, rum.stderr
    assert "└ low: none on 20 examples" in rum.stdout and "└ high: neggrad_plus on 20 examples" in rum.stdout
    assert "mean ToW" in rum.stdout


@pytest.mark.parametrize("algorithm", ["salun", "random_label", "neggrad", "l1_sparse"])
def test_every_registered_algorithm_runs_from_the_cli(first_run, run_main, algorithm):
    """Each of RUM's ingredients runs like SCRUB: one epoch on the embedded default, a record with ToW and ToW-MIA."""
    store, _ = first_run
    res = run_main("run", "--algorithm", algorithm, *TINY, "--train-epochs", "3", "--param", "epochs=1",
                   "--store", str(store), "--json")
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    assert rec["algorithm"] == algorithm and 0 <= rec["tow"] <= 1 and 0 <= rec["tow_mia"] <= 1, rec


def test_the_papers_cifar10_rum_plan_runs_on_the_embedded_default(first_run, run_main):
    """none -> finetune -> salun, the RUM script's settings (the paper's best RUM for CIFAR-10), on digits."""
    store, _ = first_run
    res = run_main("run", "--algorithm", "rum", *TINY, "--train-epochs", "3", "--forget", "mix", "--forget-size",
                   "60", "--rum-plan", "paper_cifar10", "--store", str(store))
    assert res.returncode == 0, res.stderr
    assert "└ low: none" in res.stdout and "└ mid: finetune" in res.stdout and "└ high: salun" in res.stdout
    assert "mean ToW" in res.stdout
