"""Model registry tests; like timm's, they walk every registered architecture.

Full-width models are only built to count parameters; everything that runs a forward pass uses width 0.125
so the file stays fast on a 2-core CPU runner.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from unlearn_core.errors import ConfigError
from unlearn_core.models import MODELS, Normalize, create_model, model_names

# Computed from the reference architectures (torchvision's ResNet-18 / VGG-16-bn with a CIFAR stem); a new
# architecture must add its counts here.
EXPECTED_PARAMS = {
    "resnet18": {10: 11_173_962, 100: 11_220_132},
    "vgg16_bn": {10: 14_728_266, 100: 14_774_436},
}
TINY = 0.125
NAMES = model_names()


def _tiny(name: str, num_classes: int = 10, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes, width=TINY, **kwargs)


def _inputs(n: int = 4, c: int = 3, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, c, size, size, generator=g)  # models take [0, 1] floats and normalise themselves


def test_registry_is_filled():
    assert NAMES, "importing unlearn_core.models registered no architecture"
    assert set(NAMES) == set(EXPECTED_PARAMS), "every registered model needs reference parameter counts"


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", NAMES)
def test_param_count_full_width(name, num_classes):
    model = create_model(name, num_classes)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == EXPECTED_PARAMS[name][num_classes]
    assert model.num_classes == num_classes


@pytest.mark.parametrize("name", NAMES)
def test_forward_rgb_32(name):
    model = _tiny(name).eval()
    with torch.no_grad():
        out = model(_inputs(2, 3, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_forward_grey_16(name):
    # The digits dataset: one channel, 16×16 (VGG ends at a 1×1 map).
    model = _tiny(name, in_chans=1).eval()
    with torch.no_grad():
        out = model(_inputs(2, 1, 16))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_backward_odd_class_count(name):
    model = _tiny(name, num_classes=7).train()
    x = _inputs(4, 3, 32)
    loss = F.cross_entropy(model(x), torch.arange(4) % 7)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"


@pytest.mark.parametrize("name", NAMES)
def test_features_and_head(name):
    model = _tiny(name).eval()
    x = _inputs(2)
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
        assert feats.shape == (2, model.num_features)
        torch.testing.assert_close(model.forward_head(feats), out)


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_matches_contiguous(name):
    model = _tiny(name).eval()
    x = _inputs(2)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_input_not_modified(name):
    model = _tiny(name).train()
    x = _inputs(2)
    before = x.clone()
    model(x).sum().backward()
    assert torch.equal(x, before)


@pytest.mark.parametrize("name", NAMES)
def test_autocast_bf16_cpu(name):
    # CPU stand-in for the CUDA bf16 path: catches dtype mix-ups without a GPU.
    model = _tiny(name).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(_inputs(4))
    assert out.shape == (4, 10)
    assert torch.isfinite(out.float()).all()
    out.float().sum().backward()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_autocast_bf16_cuda_channels_last(name):
    model = _tiny(name).cuda().to(memory_format=torch.channels_last).train()
    x = _inputs(4).cuda().to(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x)
    assert out.shape == (4, 10)
    assert torch.isfinite(out.float()).all()
    out.float().sum().backward()


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as exc_info:
        create_model("resnet19", 10)
    msg = str(exc_info.value)
    assert "resnet19" in msg
    for name in NAMES:
        assert name in msg


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(width=0),
        dict(width=-0.5),
        dict(width=float("nan")),
        dict(width=0.001),  # positive, but rounds 64 channels to 0
        dict(num_classes=1),
        dict(num_classes=2.5),
        dict(in_chans=0),
        dict(mean=(0.5, 0.5)),  # two values for three channels
        dict(std=0.0),
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
@pytest.mark.parametrize("name", NAMES)
def test_invalid_arguments_raise_config_error(name, kwargs):
    args = dict(num_classes=10, width=TINY)
    args.update(kwargs)
    num_classes = args.pop("num_classes")
    with pytest.raises(ConfigError):
        create_model(name, num_classes, **args)


@pytest.mark.parametrize("name", NAMES)
def test_normalize_is_first_layer_with_defaults(name):
    model = _tiny(name, mean=None, std=None)  # None falls through to the family default
    first = next(iter(model.children()))
    assert isinstance(first, Normalize)
    torch.testing.assert_close(first.mean.flatten(), torch.full((3,), 0.5))
    torch.testing.assert_close(first.std.flatten(), torch.full((3,), 0.5))
    assert "normalize.mean" in model.state_dict()  # checkpoints carry their normalisation


@pytest.mark.parametrize("name", NAMES)
def test_normalize_uses_given_stats(name):
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    model = _tiny(name, mean=mean, std=std).eval()
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(model.normalize.mean, m)
    torch.testing.assert_close(model.normalize.std, s)

    # Same weights with 0.5/0.5 stats, fed an input remapped so that both normalise to the same tensor:
    # equal outputs show the forward pass really goes through the given mean/std.
    default = copy.deepcopy(model)
    default.normalize.mean.fill_(0.5)
    default.normalize.std.fill_(0.5)
    x = _inputs(2)
    x_remapped = (x - m) / s * 0.5 + 0.5
    with torch.no_grad():
        torch.testing.assert_close(model(x), default(x_remapped), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(model(x), default(x), atol=1e-4)


def test_normalize_layer():
    layer = Normalize((0.1, 0.2), (0.5, 0.25))
    x = torch.ones(1, 2, 3, 3)
    out = layer(x)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([1.8, 3.2]))
    with pytest.raises(ConfigError):
        Normalize((0.1, 0.2), (0.5, 0.25, 0.1))


def test_registry_is_the_public_one():
    assert MODELS.names() == NAMES
