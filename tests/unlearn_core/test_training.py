"""Training from scratch on real data (scikit-learn's digits), learning events, recipes and the KD loss.

Models are width 0.125 so a 4-epoch run takes seconds on a 2-core CPU; each architecture is trained once
per module (fixture) and shared by the accuracy and learning-event tests. The module runs torch on one
thread: on a shared 2-core runner two OpenMP threads fighting other processes run 10-20x slower.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unlearn_core.batching import DeviceData
from unlearn_core.data import load_dataset
from unlearn_core.errors import ConfigError
from unlearn_core.metrics import accuracy, predict_probs
from unlearn_core.models import create_model
from unlearn_core.training import (TrainConfig, kl_to_teacher, recipe_for, train)

ARCHS = ("resnet18", "vgg16_bn")
WIDTH = 0.125
EPOCHS = 4


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def train_data(digits):
    return DeviceData.from_arrays(digits.train.x, digits.train.y, "cpu")


def _model(arch, ds, init_seed=0):
    torch.manual_seed(init_seed)
    return create_model(arch, ds.num_classes, in_chans=ds.in_chans, width=WIDTH, mean=ds.mean, std=ds.std)


@pytest.fixture(scope="module", params=ARCHS)
def trained(request, digits, train_data):
    model = _model(request.param, digits)
    epochs_seen = []
    res = train(model, train_data, recipe_for("digits", epochs=EPOCHS), seed=0, pad=digits.crop_pad,
                flip=digits.flip, record_events=True, on_epoch=lambda e, s: epochs_seen.append((e, s)))
    return request.param, model, res, epochs_seen


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------- real training

def test_train_reaches_well_above_chance(trained, digits):
    arch, model, res, epochs_seen = trained
    acc = accuracy(predict_probs(model, torch.from_numpy(digits.test.x.copy())), digits.test.y.copy())
    assert acc >= 80.0, f"{arch}: test accuracy {acc:.1f}% after {EPOCHS} epochs (chance is 10%)"
    assert math.isfinite(res.last_loss) and res.last_loss < 1.0
    assert res.seconds > 0
    assert [e for e, _ in epochs_seen] == list(range(EPOCHS))
    losses = [s["loss"] for _, s in epochs_seen]
    assert losses[-1] < losses[0], f"loss did not fall: {losses}"
    assert res.last_loss == losses[-1]


def test_learning_events_one_valid_value_per_example(trained, train_data):
    arch, _, res, _ = trained
    ev = res.events
    assert ev is not None and ev.epochs == EPOCHS
    n = len(train_data)
    for name in ("confidence", "max_conf", "neg_entropy", "correct"):
        v = getattr(ev, name)
        assert v.shape == (n,), f"{name}: shape {v.shape}"
        assert np.isfinite(v).all(), f"{name} has non-finite values"
    assert ((ev.confidence >= 0) & (ev.confidence <= 1)).all()
    assert ((ev.max_conf >= 0) & (ev.max_conf <= 1 + 1e-6)).all()
    assert (ev.max_conf >= ev.confidence - 1e-6).all()
    assert (ev.neg_entropy <= 1e-6).all()
    assert (ev.neg_entropy >= -math.log(10) - 1e-4).all()  # entropy of 10 classes is at most log 10
    assert ((ev.correct >= 0) & (ev.correct <= 1)).all()
    # `correct` is a mean of 0/1 over EPOCHS epochs, seen once each: a multiple of 1/EPOCHS
    np.testing.assert_allclose(ev.correct * EPOCHS, np.round(ev.correct * EPOCHS), atol=1e-5)
    # a model that learns: most examples right on average, and the scores are not all the same
    assert ev.correct.mean() > 0.5 and ev.confidence.std() > 0.01
    # max_conf is reached by the true class exactly where the prediction was right every epoch
    always = ev.correct == 1.0
    np.testing.assert_allclose(ev.max_conf[always], ev.confidence[always], atol=1e-6)


def test_events_indexed_by_example_id_on_a_subset(digits, train_data):
    """Training on a subset with num_ids = the full split: unseen ids stay exactly 0."""
    positions = np.arange(0, len(train_data), 7)
    sub = train_data.subset(positions)
    res = train(_model("vgg16_bn", digits), sub, recipe_for("digits", epochs=1), seed=0,
                record_events=True, num_ids=len(train_data))
    ev = res.events
    assert ev.confidence.shape == (len(train_data),)
    unseen = np.setdiff1d(np.arange(len(train_data)), positions)
    assert (ev.confidence[unseen] == 0).all() and (ev.max_conf[unseen] == 0).all()
    assert (ev.max_conf[positions] > 0).all()  # a softmax maximum over 10 classes is at least 0.1
    assert (ev.max_conf[positions] >= 0.1 - 1e-6).all()


def test_a_lone_last_example_does_not_break_batchnorm(digits, train_data):
    """65 examples at batch 64: VGG's 1×1 maps on digits cannot batch-normalise a batch of one."""
    sub = train_data.subset(np.arange(65))
    model = _model("vgg16_bn", digits)
    before = _state(model)
    res = train(model, sub, recipe_for("digits", epochs=1), seed=0)
    assert math.isfinite(res.last_loss)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------------------- determinism

@pytest.mark.parametrize("arch", ARCHS)
def test_same_seed_same_weights_other_seed_other_weights(arch, digits, train_data):
    sub = train_data.subset(np.arange(192))
    cfg = recipe_for("digits", epochs=1)

    def run(seed):
        model = _model(arch, digits, init_seed=0)  # same initial weights: only the training seed differs
        train(model, sub, cfg, seed=seed, pad=digits.crop_pad)
        return _state(model)

    a, b, c = run(0), run(0), run(1)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "same seed must give bit-identical weights"
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point()), "seed had no effect"


# ---------------------------------------------------------------------------------------- schedule

@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_lr_schedule_per_epoch(schedule, digits, train_data):
    sub = train_data.subset(np.arange(32))
    lrs = []
    cfg = TrainConfig(epochs=4, batch_size=32, lr=0.05, schedule=schedule)
    train(_model("vgg16_bn", digits), sub, cfg, seed=0, on_epoch=lambda e, s: lrs.append(s["lr"]))
    want = ([0.05 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)] if schedule == "cosine"
            else [0.05] * 4)
    np.testing.assert_allclose(lrs, want, rtol=1e-9, atol=1e-12)


def test_zero_epochs_leaves_the_model_untouched(digits, train_data):
    model = _model("vgg16_bn", digits)
    before = _state(model)
    res = train(model, train_data.subset(np.arange(32)), recipe_for("digits", epochs=0), seed=0,
                record_events=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert res.events.epochs == 0 and (res.events.confidence == 0).all()


# ---------------------------------------------------------------------------------------- config

@pytest.mark.parametrize("bad", [
    {"epochs": -1},
    {"lr": 0.0},
    {"lr": -0.1},
    {"lr": float("nan")},
    {"batch_size": 0},
    {"momentum": -0.5},
    {"weight_decay": -1e-4},
    {"schedule": "step"},
])
def test_train_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**bad)
    msg = str(err.value)
    assert "\n" not in msg and next(iter(bad)) in msg


def test_train_config_accepts_zero_epochs_and_constant_schedule():
    cfg = TrainConfig(epochs=0, schedule="constant")
    assert cfg.epochs == 0 and cfg.schedule == "constant"


def test_paper_recipes():
    c10 = recipe_for("cifar10")
    assert c10 == TrainConfig(epochs=30, batch_size=256, lr=0.1, momentum=0.9, weight_decay=5e-4,
                              schedule="cosine", augment=True)
    c100 = recipe_for("cifar100")
    assert (c100.epochs, c100.batch_size) == (100, 128)
    assert (c100.lr, c100.momentum, c100.weight_decay, c100.schedule) == (0.1, 0.9, 5e-4, "cosine")


def test_recipe_overrides_ignore_none_and_validate():
    assert recipe_for("cifar10", epochs=None, lr=None) == recipe_for("cifar10")
    assert recipe_for("cifar10", epochs=3).epochs == 3
    assert recipe_for("cifar10", epochs=3).batch_size == 256
    with pytest.raises(ConfigError):
        recipe_for("cifar100", lr=-1.0)


# ---------------------------------------------------------------------------------------- KD loss

def _kl_by_hand(s: np.ndarray, t: np.ndarray, T: float) -> float:
    def log_softmax(z):
        z = z / T
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    ls, lt = log_softmax(s), log_softmax(t)
    per_example = (np.exp(lt) * (lt - ls)).sum(axis=1)
    return float(per_example.mean() * T * T)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_kl_to_teacher_matches_hand_computation(T):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 10, generator=g, dtype=torch.float64) * 3
    t = torch.randn(6, 10, generator=g, dtype=torch.float64) * 3
    got = kl_to_teacher(s.float(), t.float(), T)
    assert got.dim() == 0
    want = _kl_by_hand(s.float().double().numpy(), t.float().double().numpy(), T)
    assert want > 0
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    # the direction is KL(teacher ‖ student), not the reverse
    reverse = _kl_by_hand(t.float().double().numpy(), s.float().double().numpy(), T)
    assert abs(reverse - want) > 1e-3


def test_kl_to_teacher_is_zero_for_identical_logits_and_has_gradients():
    g = torch.Generator().manual_seed(1)
    t = torch.randn(5, 10, generator=g)
    s = t.clone().requires_grad_(True)
    kl = kl_to_teacher(s, t, 4.0)
    assert abs(kl.item()) < 1e-6
    shifted = kl_to_teacher(t + 7.0, t, 4.0)  # softmax ignores a constant shift
    assert abs(shifted.item()) < 1e-5
    s2 = (t + torch.randn(5, 10, generator=g)).requires_grad_(True)
    kl_to_teacher(s2, t, 4.0).backward()
    assert s2.grad is not None and s2.grad.abs().sum() > 0
