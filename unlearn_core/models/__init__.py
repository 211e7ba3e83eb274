"""Model architectures, looked up by name through `MODELS` (timm style).

Every model takes float N×C×H×W inputs in [0, 1] and normalises them itself (first layer `Normalize`), and
exposes `num_classes`, `num_features`, `forward_features(x)` (pooled, N×num_features) and
`forward_head(features)`, with `forward(x) == forward_head(forward_features(x))`.

    model = create_model("resnet18", num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD)
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

from torch import nn

from ..errors import ConfigError
from ..registry import Registry

# Defined before the family imports below: each family file registers into it at import time.
MODELS: Registry = Registry("architecture")

from . import resnet, vgg  # noqa: E402,F401  (importing fills MODELS; no hand-kept list)
from .normalize import Normalize  # noqa: E402

__all__ = ["MODELS", "Normalize", "create_model", "model_names"]

# Narrowest layer in every family (the stem / first conv); `width` must leave it at least one channel.
_BASE_MIN_CHANNELS = 64


def _as_int(what: str, value, minimum: int) -> int:
    # numbers.Integral admits numpy ints from configs; bool is an int subclass but never a valid count.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def model_names() -> list[str]:
    """Registered architecture names, sorted."""
    return MODELS.names()


def create_model(
    name: str,
    num_classes: int,
    *,
    in_chans: int = 3,
    width: float = 1.0,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> nn.Module:
    """Build architecture `name` with a `num_classes`-way linear head.

    Args:
        name: one of `model_names()`.
        num_classes: classes of the head, at least 2.
        in_chans: input channels, at least 1.
        width: channel multiplier, > 0 (1.0 is the reference model; tests use 0.125 / 0.25).
        mean, std: input statistics for the model's `Normalize` layer; None keeps the family default.

    Raises:
        ConfigError: unknown name or an invalid value (the message says what is valid).
    """
    entry = MODELS.get(name)
    num_classes = _as_int("num_classes", num_classes, minimum=2)
    in_chans = _as_int("in_chans", in_chans, minimum=1)
    if isinstance(width, bool) or not isinstance(width, numbers.Real) or not math.isfinite(width) or width <= 0:
        raise ConfigError(f"width must be a finite number > 0, got {width!r}")
    if round(_BASE_MIN_CHANNELS * width) < 1:
        raise ConfigError(
            f"width {width!r} leaves the first {_BASE_MIN_CHANNELS}-channel layer with no channels; "
            f"use width > {1 / (2 * _BASE_MIN_CHANNELS):g}"
        )
    kwargs = dict(num_classes=num_classes, in_chans=in_chans, width=float(width), mean=mean, std=std)
    # Unset (None) arguments never override a family default.
    return entry(**{k: v for k, v in kwargs.items() if v is not None})
