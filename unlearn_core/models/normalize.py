"""Input normalisation as the first layer of every model.

Following the reference code (RUM `utils.setup_model_dataset`), normalisation lives inside the model rather
than in the data transforms: datasets yield floats in [0, 1] and each model carries its dataset's mean/std as
buffers. That keeps checkpoints self-describing and lets attacks / MIA code feed raw [0, 1] inputs.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["Normalize"]


def _per_channel(name: str, value: float | Sequence[float], num_channels: int) -> list[float]:
    """Broadcast a scalar (or length-1 sequence) to `num_channels` values; reject other lengths."""
    if isinstance(value, (int, float)):
        values = [float(value)] * num_channels
    else:
        values = [float(v) for v in value]
        if len(values) == 1:
            values = values * num_channels
    if len(values) != num_channels:
        raise ConfigError(
            f"{name} has {len(values)} values {tuple(values)} but the model takes {num_channels} input "
            f"channel(s); give one value per channel or a single value for all"
        )
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{name} must be finite, got {tuple(values)}")
    return values


class Normalize(nn.Module):
    """`(x - mean) / std` per channel on N×C×H×W inputs; mean/std are (persistent) buffers.

    Args:
        mean: per-channel mean, a scalar, or None for 0.5 on every channel.
        std: per-channel std (> 0), a scalar, or None for 0.5 on every channel.
        num_channels: channel count; inferred from `mean`/`std` when they are sequences, else 3.
    """

    def __init__(
        self,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        num_channels: int | None = None,
    ):
        super().__init__()
        if num_channels is None:
            lens = [len(v) for v in (mean, std) if v is not None and not isinstance(v, (int, float))]
            num_channels = max(lens) if lens else 3
        mean_v = _per_channel("mean", 0.5 if mean is None else mean, num_channels)
        std_v = _per_channel("std", 0.5 if std is None else std, num_channels)
        if any(s <= 0 for s in std_v):
            raise ConfigError(f"std must be > 0 on every channel, got {tuple(std_v)}")
        self.num_channels = num_channels
        # Shaped 1×C×1×1 so they broadcast over NCHW and keep channels_last inputs channels_last.
        self.register_buffer("mean", torch.tensor(mean_v).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std_v).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Out of place: callers (e.g. MIA / attack code) may reuse the input tensor afterwards.
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        mean = tuple(round(v, 4) for v in self.mean.flatten().tolist())
        std = tuple(round(v, 4) for v in self.std.flatten().tolist())
        return f"mean={mean}, std={std}"
