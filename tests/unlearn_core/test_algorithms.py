"""SCRUB, NegGrad+ and fine-tuning on real data: scikit-learn's digits with a width-reduced ResNet-18.

One original model is trained once per module (6 epochs, width 0.125, a temporary artifact store) and every
test unlearns fresh copies of it. Everything runs on the CPU in float32 and in one process, so identical
computations give identical parameters.
"""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch

from unlearn_core.errors import ConfigError, LossDiverged
from unlearn_core.forget import select_request
from unlearn_core.metrics import accuracy, predict_probs
from unlearn_core.references import original
from unlearn_core.run import start
from unlearn_core.spec import ExperimentSpec
from unlearn_core.training import TrainConfig, kl_to_teacher, train
from unlearn_core.unlearning import ALGORITHMS, create_unlearner, make_config
from unlearn_core.workspace import Workspace

WIDTH, TRAIN_EPOCHS, SEED = 0.125, 6, 0


@pytest.fixture(scope="module")
def ws(shared_store):
    spec = ExperimentSpec(dataset="digits", arch="resnet18", width=WIDTH, seed=SEED, train_epochs=TRAIN_EPOCHS,
                          store=str(shared_store), device="cpu")
    return Workspace(spec)


@pytest.fixture(scope="module")
def original_state(ws):
    model, _ = original(ws)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def random_sets(ws):
    # the first request of a run with the default spec: 90 random examples
    ids, _ = select_request(ws.spec.forget, np.arange(len(ws.train)), index=0, size=ws.spec.resolved_forget_size,
                            seed=ws.spec.seed, labels=ws.data.train.y, classes=ws.spec.forget_classes)
    assert len(ids) == 90
    return ids, *ws.sets(ids)


def _unlearner(ws, state, algorithm, forget, retain, **params):
    model = ws.load_model(state)
    return create_unlearner(algorithm, model, forget, retain, make_config(algorithm, params), seed=SEED,
                            pad=ws.data.crop_pad, flip=ws.data.flip)


def _params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _assert_same(a: dict, b: dict, what: str):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-6), f"{what}: {k} differs by {(a[k] - b[k]).abs().max()}"


# ------------------------------------------------------------------------------------------ degenerate cases

EPOCHS, BATCH, LR = 2, 128, 0.05
DEGENERATE = {
    # SCRUB with no max pass, no KL and γ = 1 minimizes only CE(retain): fine-tuning.
    "scrub": dict(max_steps=0, alpha=0.0, gamma=1.0),
    # NegGrad+ with β = 1 gives the forget term weight 0: fine-tuning.
    "neggrad_plus": dict(beta=1.0),
    "finetune": dict(),
}


@pytest.mark.parametrize("algorithm", sorted(DEGENERATE))
def test_degenerate_settings_equal_plain_finetuning(ws, original_state, random_sets, algorithm):
    _, forget, retain = random_sets
    ref = ws.load_model(original_state)
    # The retain stream of an Unlearner is seeded with `seed` (the forget stream with seed + 1), so plain
    # training with the same seed sees the same batches in the same order.
    train(ref, retain, TrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=LR, momentum=0.9, weight_decay=5e-4,
                                   schedule="constant", augment=False), seed=SEED)
    unl = _unlearner(ws, original_state, algorithm, forget, retain, epochs=EPOCHS, lr=LR, momentum=0.9,
                     weight_decay=5e-4, retain_batch_size=BATCH, **DEGENERATE[algorithm])
    unl.run()

    moved = max((p - original_state[k]).abs().max().item() for k, p in _params(ref).items())
    assert moved > 1e-3, "fine-tuning did not change the model: the comparison would be vacuous"
    _assert_same(_params(unl.model), _params(ref), algorithm)
    buffers_u, buffers_r = dict(unl.model.named_buffers()), dict(ref.named_buffers())
    bn_equal = all(torch.allclose(buffers_u[k].float(), buffers_r[k].float(), rtol=0, atol=1e-6) for k in buffers_r)
    if algorithm == "neggrad_plus":
        # β = 1 still runs the forget batches forward in train mode (as the references do), so BatchNorm's
        # running statistics see them: parameters match fine-tuning, BN buffers do not.
        assert not bn_equal
    else:
        assert bn_equal


# ------------------------------------------------------------------------------------------ SCRUB's max step

def _kl(model, teacher, data, T=4.0):
    """KL_T(teacher ‖ student) on a whole set, both in eval mode (what the metrics see)."""
    model.eval()
    with torch.no_grad():
        x = data.x.float() / 255
        return kl_to_teacher(model(x), teacher(x), T).item()


def test_scrub_max_step_increases_forget_kl(ws, original_state, random_sets):
    _, forget, retain = random_sets
    teacher = ws.load_model(original_state).eval()
    common = dict(epochs=1, lr=0.002, alpha=0.5, gamma=1.0, forget_batch_size=16, retain_batch_size=128)
    kl = {}
    for max_steps in (0, 1):
        unl = _unlearner(ws, original_state, "scrub", forget, retain, max_steps=max_steps, **common)
        assert _kl(unl.model, teacher, forget) == pytest.approx(0.0, abs=1e-6)  # student = teacher
        stats = unl.next_epoch()
        assert ("forget_kl" in stats) == bool(max_steps)
        kl[max_steps] = (_kl(unl.model, teacher, forget), _kl(unl.model, teacher, ws.test))
    (f0, _), (f1, t1) = kl[0], kl[1]
    # Same retain pass in both runs; only the max pass differs, and it must push the student away from the
    # teacher on the forget set. Forget batches also move BatchNorm's running statistics (the student is in
    # train mode), which alone raises the eval-mode KL somewhat even if the pass *descended* on the KL; so the
    # max pass must also make the forget set the place where student and teacher differ most: more than on
    # the unseen test set. A small lr keeps the pass local: at lr 0.01 six ascent steps already blow the
    # student up everywhere (KL ~10 on both sets), which says nothing about where it moved first.
    # measured: f1/f0 = 8.9 (f1 0.23) on one x86_64 CPU, over 10 on another; a KL that BatchNorm alone moved
    # stays near f0.
    assert f1 > 0.15 and f1 > 5 * f0, kl
    assert f1 > t1, kl


def test_scrubs_teacher_logits_are_the_teachers_forward_on_each_batch(ws, original_state, random_sets):
    """Without augmentation SCRUB reads the teacher's logits from one pass over each set, by example id: they must
    be the teacher's own forward on the batch (after a restore too); with augmentation it runs that forward."""
    _, forget, retain = random_sets
    unl = _unlearner(ws, original_state, "scrub", forget, retain, epochs=1, max_steps=1)
    assert (unl.pad, unl.flip) == (0, False)
    for which, batches in (("forget", unl.forget_batches(16)), ("retain", unl.retain_batches(128))):
        for x, _, ids in batches:
            with torch.no_grad():
                assert torch.equal(unl._teacher_logits(x, ids, which), unl.teacher(x)), which
    unl.next_epoch()
    moved = _unlearner(ws, original_state, "scrub", forget, retain, epochs=1, max_steps=1)
    moved.teacher.load_state_dict(unl.model.state_dict())  # another teacher: a state restored below must win
    x, _, ids = next(iter(moved.retain_batches(128)))
    moved._teacher_logits(x, ids, "retain")  # looked up with that other teacher
    moved.load_state_dict(unl.state_dict())
    x, _, ids = next(iter(moved.retain_batches(128)))
    with torch.no_grad():
        assert torch.equal(moved._teacher_logits(x, ids, "retain"), unl.teacher(x))
    aug = _unlearner(ws, original_state, "scrub", forget, retain, epochs=1, max_steps=1, augment=True)
    assert aug.pad or aug.flip
    x, _, ids = next(iter(aug.retain_batches(128)))
    with torch.no_grad():
        assert torch.equal(aug._teacher_logits(x, ids, "retain"), aug.teacher(x))
    assert not aug._teacher_cache


# ------------------------------------------------------------------------------------------ actual forgetting

def test_scrub_and_neggrad_plus_forget_a_class_and_keep_the_rest(ws, original_state):
    """Class forgetting: with 90 random digits the retrained model itself still classifies ~97 % of them
    correctly (it generalizes to them), so a faithful unlearner barely lowers forget accuracy and a test on
    it could not tell forgetting from noise. Removing all of class 0 (128 examples) must drive forget accuracy
    to near 0 while the test accuracy on the other classes stays near the original's."""
    y = ws.data.train.y
    ids = np.flatnonzero(y == 0)
    forget, retain = ws.sets(ids)
    test_keep = ws.test.y != 0
    kept_x, kept_y = ws.test.x[test_keep], ws.test.y[test_keep]

    def accs(model):
        return (accuracy(predict_probs(model, forget.x), forget.y),
                accuracy(predict_probs(model, kept_x), kept_y))

    f0, t0 = accs(ws.load_model(original_state))
    assert f0 > 90 and t0 > 85, "the original model is too weak for this test"
    settings = {
        # lr 0.005: forget 0 %, kept 95.7–97.2 % (original 97.8–98.5) in both memory formats; at 0.01 the kept
        # accuracy was 93.8 % in one and 87.0 % in the other: too close to the bound to say anything
        "scrub": dict(epochs=2, max_steps=1, lr=0.005, alpha=0.5, gamma=1.0, forget_batch_size=32,
                      retain_batch_size=128),
        "neggrad_plus": dict(epochs=2, beta=0.9, lr=0.02, forget_batch_size=32, retain_batch_size=128),
    }
    for algorithm, params in settings.items():
        unl = _unlearner(ws, original_state, algorithm, forget, retain, **params)
        unl.run()
        f, t = accs(unl.model)
        assert f < f0 - 50, f"{algorithm}: forget accuracy {f:.1f} vs original {f0:.1f}"
        assert t > t0 - 10, f"{algorithm}: test accuracy on the kept classes {t:.1f} vs original {t0:.1f}"


# ------------------------------------------------------------------------------------------ divergence

DIVERGING = dict(beta=0.2, lr=1.0, epochs=2, forget_batch_size=32, retain_batch_size=64)


def test_neggrad_plus_beta_0_2_diverges_in_first_epoch(ws, original_state, random_sets):
    _, forget, retain = random_sets
    unl = _unlearner(ws, original_state, "neggrad_plus", forget, retain, **DIVERGING)
    with pytest.raises(LossDiverged) as info:
        unl.run()
    assert info.value.epoch == 0
    assert not np.isfinite(info.value.value) or abs(info.value.value) > unl.diverge_bound
    assert unl.epoch == 0  # the diverged epoch is not counted as completed


def test_run_records_divergence(ws):
    rec = start(ws.spec, "neggrad_plus", DIVERGING, ws).run()
    d = rec["diverged"]
    # Changed on purpose (issue #11): the top-level `diverged` always names the request it happened in.
    assert d is not None and set(d) == {"request", "reason", "epoch", "value"}
    assert d["request"] == 1 and d["epoch"] == 0 and "NegGrad+" in d["reason"]
    assert rec["history"] == []  # no epoch completed
    for k in ("forget_acc", "retain_acc", "val_acc", "test_acc", "mia", "tow", "tow_mia"):
        assert k in rec
    # Changed on purpose (issue #11): a diverged request scores 0 (its accuracies/MIA are still recorded,
    # or None where the diverged model cannot be evaluated).
    assert rec["tow"] == rec["tow_mia"] == 0.0
    assert rec["requests"][0]["diverged"] == {k: v for k, v in d.items() if k != "request"}
    assert rec["retrain"]["test_acc"] > 80  # the reference model itself is fine


# ------------------------------------------------------------------------------------------ resume

@pytest.mark.parametrize("algorithm,params,stop_after", [
    ("scrub", dict(epochs=3, max_steps=2, lr=0.01, alpha=0.5, gamma=1.0, forget_batch_size=32,
                   retain_batch_size=128), 1),
    ("neggrad_plus", dict(epochs=2, beta=0.9, lr=0.01, forget_batch_size=32, retain_batch_size=128), 1),
])
def test_resume_from_checkpoint_equals_uninterrupted_run(ws, original_state, random_sets, algorithm, params,
                                                         stop_after):
    _, forget, retain = random_sets
    full = _unlearner(ws, original_state, algorithm, forget, retain, **params)
    full.run()

    first = _unlearner(ws, original_state, algorithm, forget, retain, **params)
    for _ in range(stop_after):
        first.next_epoch()
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)  # what the tuner writes as a trial checkpoint
    del first
    buf.seek(0)
    resumed = _unlearner(ws, original_state, algorithm, forget, retain, **params)  # fresh model, optimizer
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed.epoch == stop_after
    resumed.run()
    assert resumed.epoch == params["epochs"]

    _assert_same(dict(resumed.model.state_dict()), dict(full.model.state_dict()), f"{algorithm} resumed")
    moved = max((p - original_state[k]).abs().max().item() for k, p in _params(full.model).items())
    assert moved > 1e-4


# ------------------------------------------------------------------------------------------ validation

BAD = [
    ("neggrad_plus", {"beta": 1.5}, "beta"),
    ("neggrad_plus", {"beta": -0.1}, "beta"),
    ("neggrad_plus", {"beta": "1.01"}, "beta"),
    ("scrub", {"temperature": -1.0}, "temperature"),
    ("scrub", {"temperature": 0}, "temperature"),
    ("scrub", {"max_steps": 5, "epochs": 2}, "max_steps"),
    ("scrub", {"max_steps": -1}, "max_steps"),
    ("scrub", {"alpha": -0.5}, "alpha"),
    ("scrub", {"gamma": "-1"}, "gamma"),
    ("scrub", {"lr": "abc"}, "lr"),
    ("scrub", {"epochs": "2.5"}, "epochs"),
] + [(a, {"lr": -1.0}, "lr") for a in ("scrub", "neggrad_plus", "finetune")] \
  + [(a, {"lr": 0.0}, "lr") for a in ("scrub", "neggrad_plus", "finetune")] \
  + [(a, {"epochs": -1}, "epochs") for a in ("scrub", "neggrad_plus", "finetune")]


@pytest.mark.parametrize("algorithm,params,name", BAD)
def test_invalid_hyperparameters_raise_config_error(algorithm, params, name):
    with pytest.raises(ConfigError, match=name):
        make_config(algorithm, params)


@pytest.mark.parametrize("algorithm", ["scrub", "neggrad_plus", "finetune"])
def test_unknown_hyperparameter_lists_valid_names(algorithm):
    with pytest.raises(ConfigError) as info:
        make_config(algorithm, {"lr": 0.01, "bogus_knob": 3})
    msg = str(info.value)
    assert "bogus_knob" in msg
    for f in dataclasses.fields(ALGORITHMS.get(algorithm).Config):
        assert f.name in msg


def test_unknown_algorithm_lists_valid_ones():
    with pytest.raises(ConfigError) as info:
        make_config("scrubb")
    for name in ("scrub", "neggrad_plus", "finetune"):
        assert name in str(info.value)


def test_valid_strings_are_coerced():
    cfg = make_config("scrub", {"lr": "0.02", "epochs": "3", "max_steps": "3", "augment": "true"})
    assert (cfg.lr, cfg.epochs, cfg.max_steps, cfg.augment) == (0.02, 3, 3, True)
    assert isinstance(cfg.epochs, int)


def test_bad_config_trains_nothing(tmp_path):
    store = tmp_path / "store"
    spec = ExperimentSpec(dataset="digits", width=WIDTH, train_epochs=1, store=str(store), device="cpu")
    with pytest.raises(ConfigError, match="beta"):
        start(spec, "neggrad_plus", {"beta": 2.0}).run()
    assert not store.exists()


def test_unsatisfiable_forget_set_trains_nothing(ws, tmp_path):
    """The forget set's size is checked before the original is trained: a too-large one fails fast, store
    untouched. (The run driver checks that the requests fit the train split before selecting anything, so the
    message now comes from that check, not from the random selection's "pool has".)"""
    store = tmp_path / "store"
    spec = dataclasses.replace(ws.spec, store=str(store), forget_size=len(ws.train) + 1)
    with pytest.raises(ConfigError, match=f"train split has {len(ws.train)}"):
        start(spec, "scrub", {"epochs": 1, "max_steps": 0}, Workspace(spec, ws.data)).run()
    assert not store.exists() or not any(store.rglob("*"))
