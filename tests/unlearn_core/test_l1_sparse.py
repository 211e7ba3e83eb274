"""l1-sparse: retain cross-entropy + α·(1 − e/E)·‖θ‖₁ in epoch e of E, checked step for step against SGD on that
loss written out with autograd (a linear model, one batch per epoch, no momentum or weight decay)."""
from __future__ import annotations

import copy

import pytest
import torch

from unlearn_core.errors import ConfigError
from unlearn_core.l1_sparse import L1Sparse
from unlearn_core.unlearning import make_config

CLASSES = 3
ALPHA, LR, EPOCHS = 0.05, 0.5, 4


def _sgd_on_l1_loss(model, retain, weights) -> torch.nn.Module:
    """Plain SGD, one full-batch step per epoch, on CE(retain) + w_e·Σ|θ| (every parameter, biases included)."""
    model = copy.deepcopy(model)
    for w in weights:
        loss = torch.nn.functional.cross_entropy(model(retain.x.float() / 255), retain.y)
        loss = loss + w * sum(p.abs().sum() for p in model.parameters())
        grads = torch.autograd.grad(loss, list(model.parameters()))
        with torch.no_grad():
            for p, g in zip(model.parameters(), grads):
                p -= LR * g
    return model


def test_the_l1_weight_decays_linearly_from_alpha(tiny):
    forget, retain, model = tiny(10, 50, CLASSES)
    cfg = make_config("l1_sparse", {"epochs": EPOCHS, "lr": LR, "alpha": ALPHA, "retain_batch_size": 64,
                                    "momentum": 0.0, "weight_decay": 0.0})
    unl = L1Sparse(copy.deepcopy(model), forget, retain, cfg, seed=0)
    stats = [unl.next_epoch() for _ in range(EPOCHS)]
    expected = [ALPHA * (1 - e / EPOCHS) for e in range(EPOCHS)]   # 0.05, 0.0375, 0.025, 0.0125
    assert [s["l1_weight"] for s in stats] == pytest.approx(expected, rel=1e-12)
    ref = _sgd_on_l1_loss(model, retain, expected)
    for p, q in zip(unl.model.parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    # ... and the schedule matters: a constant α ends elsewhere
    constant = _sgd_on_l1_loss(model, retain, [ALPHA] * EPOCHS)
    assert not all(torch.allclose(p, q, atol=1e-4) for p, q in zip(unl.model.parameters(), constant.parameters()))


def test_the_forget_set_is_not_used(tiny):
    forget, retain, model = tiny(10, 50, CLASSES)
    other_forget, _, _ = tiny(10, 50, CLASSES, seed=7)
    cfg = make_config("l1_sparse", {"epochs": 2, "lr": 0.1, "alpha": 0.01, "retain_batch_size": 16})
    a = L1Sparse(copy.deepcopy(model), forget, retain, cfg, seed=0)
    b = L1Sparse(copy.deepcopy(model), other_forget, retain, cfg, seed=0)
    a.run()
    b.run()
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))


def test_the_penalty_shrinks_the_weights(tiny):
    forget, retain, model = tiny(10, 50, CLASSES)
    norms = {}
    for alpha in (0.0, 0.05):
        cfg = make_config("l1_sparse", {"epochs": 3, "lr": 0.2, "alpha": alpha, "retain_batch_size": 16})
        unl = L1Sparse(copy.deepcopy(model), forget, retain, cfg, seed=0)
        unl.run()
        norms[alpha] = sum(p.abs().sum().item() for p in unl.model.parameters())
    assert norms[0.05] < 0.9 * norms[0.0]


def test_defaults_and_ranges():
    cfg = make_config("l1_sparse", {})
    assert (cfg.lr, cfg.epochs, cfg.alpha, cfg.retain_batch_size) == (0.01, 10, 1e-4, 256)
    for params, message in [({"alpha": -1e-4}, "alpha must be >= 0"), ({"lr": 0}, "lr must be > 0"),
                            ({"retain_batch_size": 0}, "retain_batch_size")]:
        with pytest.raises(ConfigError, match=message):
            make_config("l1_sparse", params)
