"""End to end on digits: originals and retrains are trained once, stored, and found again by a new Workspace.

Each architecture trains one original and one retrain (4 epochs, width 0.125) into a module-wide store;
every other test reuses them. Whether something was trained is read from the Workspace's `log` (it says
"training ..." before every training run), never from timings. torch runs on one thread here: on a shared
2-core runner two OpenMP threads fighting other processes run 10-20x slower.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from unlearn_core.data import load_dataset
from unlearn_core import references
from unlearn_core.errors import ConfigError
from unlearn_core.forget import select_request
from unlearn_core.metrics import accuracy, predict_probs
from unlearn_core.spec import ExperimentSpec
from unlearn_core.workspace import Workspace

ARCHS = ("resnet18", "vgg16_bn")
WIDTH = 0.125
EPOCHS = 4


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("store")


def _spec(store, **kw) -> ExperimentSpec:
    return ExperimentSpec(**{"dataset": "digits", "arch": "resnet18", "width": WIDTH, "train_epochs": EPOCHS,
                             "store": str(store), **kw})


class Log(list):
    def __call__(self, line: str) -> None:
        self.append(line)

    def trained(self) -> bool:
        return any("training" in line for line in self)


def _test_acc(ws: Workspace, model) -> float:
    return accuracy(predict_probs(model, ws.test.x), ws.test.y)


def _artifacts(store: Path) -> set[str]:
    return {str(p.relative_to(store)) for p in store.rglob("*.pt")}


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module", params=ARCHS)
def first(request, store, digits):
    """One Workspace per arch that trains its original and one retrain into the shared store."""
    log = Log()
    ws = Workspace(_spec(store, arch=request.param), dataset=digits, log=log)
    before = _artifacts(store)
    original, art = references.original(ws)
    assert log.trained(), "the first original() must train"
    n_orig_logs = len(log)
    forget = np.random.RandomState(0).choice(len(ws.train), 90, replace=False)
    retrained, rart = references.retrain(ws, forget)
    assert any("training retrain" in line for line in log[n_orig_logs:]), "the first retrain() must train"
    return {"arch": request.param, "ws": ws, "log": log, "original": original, "art": art, "forget": forget,
            "retrained": retrained, "rart": rart, "new_files": _artifacts(store) - before}


def test_original_trains_well_above_chance(first):
    ws, art = first["ws"], first["art"]
    acc = _test_acc(ws, first["original"])
    assert acc >= 80.0, f"{first['arch']}: original test accuracy {acc:.1f}% (chance 10%)"
    assert art["seconds"] > 0 and "torch" in art["env"]
    ev = art["events"]
    assert set(ev) == {"confidence", "max_conf", "neg_entropy", "correct"}
    assert all(v.shape == (len(ws.train),) and torch.isfinite(v).all() for v in ev.values())
    epoch_lines = [line for line in first["log"] if "original epoch" in line]
    assert len(epoch_lines) == EPOCHS


def test_retrain_trains_on_the_retain_set(first):
    ws, rart = first["ws"], first["rart"]
    acc = _test_acc(ws, first["retrained"])
    assert acc >= 80.0, f"{first['arch']}: retrained test accuracy {acc:.1f}%"
    assert "events" not in rart
    assert any(f"on {len(ws.train) - 90} digits examples" in line for line in first["log"]), first["log"]
    assert not _same_weights(first["original"], first["retrained"])
    # one original and one retrain artifact were written for this arch
    kinds = sorted(p.split("/")[0] for p in first["new_files"])
    assert kinds == ["original", "retrain"]


def test_new_workspace_loads_without_training(first, store, digits):
    log = Log()
    ws = Workspace(_spec(store, arch=first["arch"]), dataset=digits, log=log)
    before = _artifacts(store)
    original, art = references.original(ws)
    retrained, _ = references.retrain(ws, first["forget"][::-1].copy())  # order of the ids does not matter
    assert not log.trained(), f"a stored artifact was trained again: {log}"
    assert any("loaded from the store" in line for line in log)
    assert _same_weights(original, first["original"])
    assert _same_weights(retrained, first["retrained"])
    assert _artifacts(store) == before
    torch.testing.assert_close(art["events"]["confidence"], first["art"]["events"]["confidence"])


def test_new_workspace_loading_its_own_data(first, store):
    """Without a Dataset handed in, the Workspace loads digits itself: same fingerprint, same artifact."""
    log = Log()
    original, _ = references.original(Workspace(_spec(store, arch=first["arch"]), log=log))
    assert not log.trained()
    assert _same_weights(original, first["original"])


def test_changing_one_forget_id_is_a_new_retrain(store, digits):
    """One id changed (same count) is another retrain; a cheap 1-epoch vgg16_bn spec keeps it fast."""
    log = Log()
    ws = Workspace(_spec(store, arch="vgg16_bn", train_epochs=1), dataset=digits, log=log)
    ids = np.arange(10)
    references.retrain(ws, ids)
    before = _artifacts(store)
    log.clear()
    references.retrain(ws, np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 11]))
    assert log.trained() and len(_artifacts(store) - before) == 1


@pytest.mark.parametrize("change", [{"seed": 1}, {"width": 0.25}], ids=["seed", "width"])
def test_other_seed_or_width_is_a_new_artifact(change, store, digits):
    """A cheap base (vgg16_bn, 1 epoch) and one variant: the variant trains and adds a file."""
    base_log = Log()
    base = Workspace(_spec(store, arch="vgg16_bn", train_epochs=1), dataset=digits, log=base_log)
    m0, _ = references.original(base)
    before = _artifacts(store)
    log = Log()
    ws = Workspace(_spec(store, arch="vgg16_bn", train_epochs=1, **change), dataset=digits, log=log)
    m1, _ = references.original(ws)
    assert log.trained(), f"{change} should not find the base artifact"
    added = _artifacts(store) - before
    assert len(added) == 1 and next(iter(added)).startswith("original/")
    if "seed" in change:
        assert not _same_weights(m0, m1)
    else:
        assert sum(p.numel() for p in m1.parameters()) > sum(p.numel() for p in m0.parameters())
    # and the base is still found as it was
    base_log.clear()
    m0_again, _ = references.original(Workspace(_spec(store, arch="vgg16_bn", train_epochs=1), dataset=digits,
                                                log=base_log))
    assert not base_log.trained() and _same_weights(m0, m0_again)


# ---------------------------------------------------------------------------------------- bad inputs

def _one_line_config_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert isinstance(excinfo.value, ConfigError) and msg and "\n" not in msg
    return msg


def test_unknown_dataset(store):
    with pytest.raises(ConfigError) as e:
        Workspace(_spec(store, dataset="mnist-but-not-registered"))
    assert "digits" in _one_line_config_error(e)  # names the valid ones


def test_unknown_arch(store, digits):
    before = _artifacts(store)
    with pytest.raises(ConfigError) as e:
        references.original(Workspace(_spec(store, arch="resnet9000"), dataset=digits))
    assert "resnet18" in _one_line_config_error(e)
    assert _artifacts(store) == before


@pytest.mark.parametrize("width", [0, -0.5])
def test_width_not_positive(store, width):
    with pytest.raises(ConfigError) as e:
        _spec(store, width=width)
    assert "width" in _one_line_config_error(e)


@pytest.mark.parametrize("ids", [[0, 5, 10_000], [-1, 3]], ids=["too-large", "negative"])
def test_forget_ids_out_of_range(store, digits, ids):
    ws = Workspace(_spec(store, arch="vgg16_bn"), dataset=digits)
    before = _artifacts(store)
    with pytest.raises(ConfigError) as e:
        references.retrain(ws, np.array(ids))
    _one_line_config_error(e)
    with pytest.raises(ConfigError) as e:
        ws.sets(np.array(ids))
    _one_line_config_error(e)
    assert _artifacts(store) == before


def test_forget_set_larger_than_training_split(store, digits):
    n = len(digits.train)
    ws = Workspace(_spec(store, arch="vgg16_bn", forget_size=n + 1), dataset=digits)
    with pytest.raises(ConfigError) as e:
        select_request("random", np.arange(n), index=0, size=ws.spec.resolved_forget_size, seed=ws.spec.seed,
                       labels=ws.data.train.y)  # a run's first request
    assert str(n) in _one_line_config_error(e)
    before = _artifacts(store)
    with pytest.raises(ConfigError) as e:  # forgetting the whole split leaves nothing to retrain on
        references.retrain(ws, np.arange(n))
    _one_line_config_error(e)
    assert _artifacts(store) == before
