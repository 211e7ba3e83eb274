"""NegGrad (gradient ascent): SGD steps up the forget set's cross-entropy, never look at the retain set, and a
run that explodes stops with `LossDiverged` as NegGrad+ does."""
from __future__ import annotations

import copy

import pytest
import torch

from unlearn_core.errors import ConfigError, LossDiverged
from unlearn_core.neggrad import NegGrad
from unlearn_core.unlearning import make_config

CLASSES = 4


def test_one_step_is_an_ascent_step_on_the_forget_cross_entropy(tiny):
    forget, retain, model = tiny(40, 20, CLASSES)
    ref = copy.deepcopy(model)
    cfg = make_config("neggrad", {"epochs": 1, "lr": 0.3, "forget_batch_size": 64, "momentum": 0.0,
                                  "weight_decay": 0.0})
    unl = NegGrad(model, forget, retain, cfg, seed=0)
    stats = unl.next_epoch()
    loss = torch.nn.functional.cross_entropy(ref(forget.x.float() / 255), forget.y)   # one batch: all 40
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    for p, q, g in zip(model.parameters(), ref.parameters(), grads):
        assert torch.allclose(p.detach(), q.detach() + 0.3 * g, atol=1e-6)   # θ + lr·∇CE: ascent
    assert stats["forget_loss"] == pytest.approx(loss.item(), rel=1e-5)


def test_the_forget_loss_rises_and_the_retain_set_is_not_used(tiny):
    forget, retain, model = tiny(64, 64, CLASSES)
    _, other_retain, _ = tiny(64, 64, CLASSES, seed=5)
    cfg = make_config("neggrad", {"epochs": 3, "lr": 0.05, "forget_batch_size": 16})
    a = NegGrad(copy.deepcopy(model), forget, retain, cfg, seed=0)
    b = NegGrad(copy.deepcopy(model), forget, other_retain, cfg, seed=0)
    losses = [a.next_epoch()["forget_loss"] for _ in range(3)]
    b.run()
    assert losses[0] < losses[1] < losses[2]
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_an_exploding_run_is_stopped_by_the_guard(tiny):
    forget, retain, model = tiny(64, 16, CLASSES)
    cfg = make_config("neggrad", {"epochs": 50, "lr": 50.0, "forget_batch_size": 8, "weight_decay": 0.0})
    unl = NegGrad(model, forget, retain, cfg, seed=0)
    with pytest.raises(LossDiverged, match="forget loss") as err:
        unl.run()
    assert err.value.epoch < 50


def test_defaults_are_the_scripted_config_and_ranges_are_checked():
    cfg = make_config("neggrad", {})
    assert (cfg.lr, cfg.epochs, cfg.forget_batch_size, cfg.momentum, cfg.weight_decay) == (1e-4, 5, 256, 0.9, 5e-4)
    for params, message in [({"lr": -1.0}, "lr must be > 0"), ({"forget_batch_size": 0}, "forget_batch_size"),
                            ({"beta": 0.5}, "unknown hyperparameter")]:
        with pytest.raises(ConfigError, match=message):
            make_config("neggrad", params)
