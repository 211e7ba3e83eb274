"""SalUn: the saliency mask is the global top share of |∇ forget loss|, and the other weights never move.

The mask is checked against the softmax regression gradient written out in numpy (float64), and against
autograd on a small ResNet with BatchNorm; freezing is checked bit for bit after epochs with momentum and
weight decay on; ratio 1 is exactly Random Label.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from unlearn_core.batching import DeviceData
from unlearn_core.errors import ConfigError
from unlearn_core.models import create_model
from unlearn_core.random_label import RandomLabel
from unlearn_core.salun import SalUn, saliency_mask
from unlearn_core.unlearning import make_config

CLASSES = 5


def _softmax_regression_grad(model, forget, batch_size: int) -> np.ndarray:
    """∑ over in-order batches of ∇ mean CE for logits = x Wᵀ + b, by hand: (softmax − onehot)ᵀ x / B."""
    lin = model[-1]
    w, b = lin.weight.detach().double().numpy(), lin.bias.detach().double().numpy()
    gw, gb = np.zeros_like(w), np.zeros_like(b)
    x_all = forget.x.double().numpy().reshape(len(forget), -1) / 255
    y_all = forget.y.numpy()
    for i in range(0, len(forget), batch_size):
        x, y = x_all[i:i + batch_size], y_all[i:i + batch_size]
        z = x @ w.T + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        d = (p - np.eye(w.shape[0])[y]) / len(y)
        gw += d.T @ x
        gb += d.sum(0)
    return np.concatenate([gw.ravel(), gb.ravel()])  # named_parameters order: weight, bias


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
def test_mask_is_the_global_top_share_of_the_forget_gradient(tiny, ratio):
    forget, _, model = tiny(70, 10, CLASSES)
    mask = saliency_mask(model, forget, ratio, batch_size=32)   # 32, 32, 6: a short last batch weighs more
    assert list(mask) == ["1.weight", "1.bias"] and all(m.dtype == torch.bool for m in mask.values())
    g = np.abs(_softmax_regression_grad(model, forget, 32))
    k = int(len(g) * ratio)
    expected = np.zeros(len(g), bool)
    expected[np.argsort(-g)[:k]] = True
    got = torch.cat([mask["1.weight"].flatten(), mask["1.bias"]]).numpy()
    assert got.sum() == k and np.array_equal(got, expected)


def test_mask_on_a_resnet_ranks_every_parameter_globally():
    """Conv, BatchNorm and fc entries compete in one ranking; the model is left as it was (eval-mode pass)."""
    torch.manual_seed(0)
    model = create_model("resnet18", 4, in_chans=1, width=0.125)
    model.train()
    rng = np.random.default_rng(0)
    forget = DeviceData.from_arrays(rng.integers(0, 256, (40, 1, 8, 8), dtype=np.uint8), rng.integers(0, 4, 40), "cpu")
    before = copy.deepcopy(model.state_dict())
    mask = saliency_mask(model, forget, 0.3, batch_size=16)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # BN statistics untouched too

    ref = copy.deepcopy(model).eval()
    for i in range(0, 40, 16):
        x, y = forget.x[i:i + 16].float() / 255, forget.y[i:i + 16]
        torch.nn.functional.cross_entropy(ref(x), y).backward()
    g = torch.cat([p.grad.abs().flatten() for p in ref.parameters()])
    m = torch.cat([mask[k].flatten() for k, _ in ref.named_parameters()])
    assert list(mask) == [k for k, _ in model.named_parameters()]
    assert m.sum() == int(len(g) * 0.3)
    assert g[m].min() >= g[~m].max()  # every kept entry at least as salient as every frozen one
    layers = {k.split(".")[0] for k, v in mask.items() if v.any()}
    assert len(layers) > 2  # not one layer's mask: the threshold is global


def test_frozen_coordinates_stay_bit_identical_under_momentum_and_weight_decay(tiny):
    forget, retain, model = tiny(60, 120, CLASSES, batchnorm=True)
    cfg = make_config("salun", {"epochs": 3, "lr": 0.5, "batch_size": 16, "ratio": 0.3, "momentum": 0.9,
                                "weight_decay": 0.05})
    start = {k: p.detach().clone() for k, p in model.named_parameters()}
    unl = SalUn(model, forget, retain, cfg, seed=0, num_classes=CLASSES)
    for _ in range(cfg.epochs):
        unl.next_epoch()
    moved = 0
    for name, p in model.named_parameters():
        m = unl.mask[name]
        assert torch.equal(p.detach()[~m], start[name][~m]), name  # bit for bit
        moved += int((p.detach()[m] != start[name][m]).sum())
        buf = unl.opt.state[p]["momentum_buffer"]
        assert torch.equal(buf[~m], torch.zeros_like(buf[~m]))
    assert moved > 0.9 * sum(int(m.sum()) for m in unl.mask.values())  # the trained entries did move
    assert sum(int((~m).sum()) for m in unl.mask.values()) > 0


def test_without_the_restore_weight_decay_would_move_them(tiny):
    """Why the restore exists: masking gradients alone (the references before Feb 2026) lets SGD's weight decay
    and momentum drift the 'frozen' entries."""
    forget, retain, model = tiny(60, 120, CLASSES)
    cfg = make_config("salun", {"epochs": 1, "lr": 0.5, "batch_size": 16, "ratio": 0.3, "weight_decay": 0.05})
    start = {k: p.detach().clone() for k, p in model.named_parameters()}
    unl = SalUn(model, forget, retain, cfg, seed=0, num_classes=CLASSES)
    drift = RandomLabel(copy.deepcopy(model), forget, retain, cfg, seed=0, num_classes=CLASSES)
    unl.next_epoch()
    masks = unl.mask
    for name, p in drift.model.named_parameters():
        p.register_hook(lambda g, m=masks[name]: g * m)  # gradient masking only
    drift.next_epoch()
    assert any(not torch.equal(p.detach()[~masks[k]], start[k][~masks[k]]) for k, p in drift.model.named_parameters())
    assert all(torch.equal(p.detach()[~masks[k]], start[k][~masks[k]]) for k, p in model.named_parameters())


def test_ratio_one_is_random_label(tiny):
    forget, retain, model = tiny(40, 80, CLASSES, batchnorm=True)
    params = {"epochs": 2, "lr": 0.1, "batch_size": 16}
    rl = RandomLabel(copy.deepcopy(model), forget, retain, make_config("random_label", params), seed=1,
                     num_classes=CLASSES)
    sal = SalUn(copy.deepcopy(model), forget, retain, make_config("salun", {**params, "ratio": 1.0}), seed=1,
                num_classes=CLASSES)
    rl.run()
    sal.run()
    assert all(bool(m.all()) for m in sal.mask.values())
    sa, sb = rl.model.state_dict(), sal.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_mask_comes_from_the_model_being_unlearned(tiny):
    """Computed at the first epoch from the model as it then is (in RUM: the stage's starting model), not from
    some original; later epochs keep it."""
    forget, retain, model = tiny(60, 60, CLASSES)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[-1].weight.mul_(-3.0)
    cfg = make_config("salun", {"epochs": 2, "lr": 0.1, "batch_size": 16, "ratio": 0.2})
    unl = SalUn(other, forget, retain, cfg, seed=0, num_classes=CLASSES)
    expected = saliency_mask(copy.deepcopy(other), forget, 0.2, 16)
    assert unl.mask is None
    unl.next_epoch()
    first = {k: v.clone() for k, v in unl.mask.items()}
    unl.next_epoch()
    assert all(torch.equal(unl.mask[k], expected[k]) and torch.equal(first[k], expected[k]) for k in expected)
    assert not all(torch.equal(v, saliency_mask(model, forget, 0.2, 16)[k]) for k, v in expected.items())


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5])
def test_ratio_range(ratio):
    with pytest.raises(ConfigError, match="0 < ratio <= 1"):
        make_config("salun", {"ratio": ratio})


def test_defaults_are_the_salun_readme():
    cfg = make_config("salun", {})
    assert (cfg.lr, cfg.epochs, cfg.ratio, cfg.batch_size, cfg.momentum, cfg.weight_decay) == (
        0.013, 10, 0.5, 256, 0.9, 5e-4)
