"""Final runs kept in the store (tuner/records.py): the same final asked for again is read back, not run; any
other run, or the same run by other code, is not found. (The prepare stage's record: test_shared_requests.py.)"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import ray

from tuner import records
from tuner.final_runs import KEYS, _run_one, rerun
from unlearn_core.artifacts import code_fingerprint
from unlearn_core.data import load_dataset
from unlearn_core.spec import ExperimentSpec

PARAMS = {"epochs": 1, "lr": 0.02}
SEEDS = (1, 2)


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return ExperimentSpec(width=0.125, train_epochs=1, forget_size=30, device="cpu",
                          store=str(tmp_path_factory.mktemp("store")))


@pytest.fixture(scope="module")
def data(spec):
    return load_dataset("digits", None, spec.split_seed)


@pytest.fixture(scope="module")
def ran(spec, data):
    """Two final runs, as the Ray tasks run them."""
    return {s: _run_one(dataclasses.replace(spec, seed=s), data, "finetune", PARAMS, 1, "current", 1) for s in SEEDS}


def test_a_stored_final_is_read_back_without_a_task(spec, data, ran):
    lines = []
    out = rerun([{"label": "paper", "params": PARAMS}], spec, data, SEEDS, algorithm="finetune", requests=1,
                ranking_model="current", cpus=1, gpus=0, objective="both", log=lines.append)
    assert not ray.is_initialized(), "stored finals must not start Ray"
    assert [ln.strip() for ln in lines[1:]] == [
        f"final {n}/2: paper seed {s} selection ToW {ran[s]['sel_tow']:.4f} ToW-MIA {ran[s]['sel_tow_mia']:.4f} "
        "(the same run's stored result)" for n, s in enumerate(SEEDS, 1)]
    for r in out[0]["runs"]:
        assert {k: r[k] for k in KEYS} == {k: ran[r["seed"]][k] for k in KEYS}
        assert r["record"] == ran[r["seed"]]["record"]


@pytest.mark.parametrize("change", ["params", "algorithm", "requests", "ranking_model", "device", "forget_size",
                                    "train_epochs", "seed", "precision"])
def test_any_other_run_is_not_found(spec, data, ran, change):
    args = {"algorithm": "finetune", "params": PARAMS, "requests": 1, "ranking_model": "current", "device": "cpu"}
    s = dataclasses.replace(spec, seed=1)
    if change == "params":
        args["params"] = {**PARAMS, "lr": 0.03}
    elif change == "algorithm":
        args["algorithm"] = "neggrad_plus"
    elif change == "requests":
        args["requests"] = 2
    elif change == "ranking_model":
        args["ranking_model"] = "retrain"
    elif change == "device":
        args["device"] = "cuda"
    elif change == "precision":
        s = dataclasses.replace(s, precision="bf16")
    else:
        s = dataclasses.replace(s, **{change: getattr(s, change) + 2})
    same = records.final_key(dataclasses.replace(spec, seed=1), data, "finetune", PARAMS, 1, "current", "cpu")
    assert records.load(spec, "final", same) is not None
    key = records.final_key(s, data, args["algorithm"], args["params"], args["requests"], args["ranking_model"],
                            args["device"])
    assert key != same and records.load(s, "final", key) is None


def test_a_final_is_keyed_on_its_precision_as_resolved(spec, data, ran):
    """No --precision on a CPU is fp32, the same run as --precision fp32; on CUDA it is bf16, another run; the
    record says what it ran in."""
    def key(precision, device):
        return records.final_key(dataclasses.replace(spec, seed=1, precision=precision), data, "finetune", PARAMS, 1,
                                 "current", device)

    assert key(None, "cpu") == key("fp32", "cpu") != key("bf16", "cpu")
    assert key(None, "cuda") == key("bf16", "cuda") != key("fp32", "cuda")
    assert records.load(spec, "final", key("fp32", "cpu"))["record"] == ran[1]["record"]
    assert {k: ran[1]["record"]["spec"][k] for k in ("precision", "memory_format")} == {
        "precision": "fp32", "memory_format": "channels_last"}


def test_the_code_fingerprint_follows_every_source_file(tmp_path):
    import unlearn_core

    src = Path(unlearn_core.__file__).parent
    same, edited = tmp_path / "same" / "unlearn_core", tmp_path / "edited" / "unlearn_core"
    for copy in (same, edited):
        shutil.copytree(src, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (edited / "scrub.py").write_text((edited / "scrub.py").read_text() + "\n# an edit\n")
    # kept per process (the code a process runs does not change under it): copies stand for other code
    assert code_fingerprint(str(same)) == code_fingerprint(str(src)) == code_fingerprint()
    assert code_fingerprint(str(edited)) != code_fingerprint()


def test_a_store_the_driver_cannot_reach_holds_no_record(spec, data):
    """Workers may reach a store the driver cannot (a mount only they have, an fsspec driver only they have):
    the driver then finds nothing and leaves the work to them."""
    far = dataclasses.replace(spec, store="nosuchprotocol://bucket/store")
    key = records.final_key(far, data, "finetune", PARAMS, 1, "current", "cpu")
    assert records.load(far, "final", key) is None
