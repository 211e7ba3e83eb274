"""GPU-resident batching: a whole split lives on the device as uint8 and is augmented there.

Why: on an H100 a DataLoader with CPU augmentation feeds ResNet-18 at ~15k img/s, while the same model
trains at ~21k+ img/s from device-resident data (measured for this project); Ray also gives each trial
few CPUs, so worker processes would be the bottleneck. The same code runs on the CPU for tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .numerics import Numerics


def device_tensor(a: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Copy an array to `device` once (Ray's object store hands out read-only numpy buffers: never view them)."""
    if isinstance(a, torch.Tensor):
        return a.to(device)
    return torch.tensor(np.ascontiguousarray(a), device=device)


def augment(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop with `pad`-pixel zero padding and random horizontal flip, per example, on x's device.

    One padded copy plus a gather of per-example windows: no Python loop over examples.
    """
    n, c, h, w = x.shape
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=generator)
        rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # n×h
        cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])  # n×w
        x = xp[torch.arange(n, device=x.device)[:, None, None, None],
               torch.arange(c, device=x.device)[None, :, None, None],
               rows[:, None, :, None], cols[:, None, None, :]]
    if flip:
        mask = torch.rand(n, device=x.device, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


@dataclass
class DeviceData:
    """Images (uint8 N×C×H×W) and labels of one set, resident on one device, with their example ids.

    `numerics` (precision and memory format; None: the device's defaults) is what its batches are computed in:
    every loop that draws batches from a set (training, each unlearner) reads it there, so a set and the
    computation on it cannot disagree. Subsets and relabelled copies keep it.
    """

    x: torch.Tensor
    y: torch.Tensor
    ids: torch.Tensor  # example ids (positions in the training split) — lets callers record per-example events
    numerics: Optional[Numerics] = None

    def __post_init__(self):
        if self.numerics is None:
            self.numerics = Numerics.resolve(self.x.device)

    @classmethod
    def from_arrays(cls, x: np.ndarray, y: np.ndarray, device, ids: np.ndarray | None = None,
                    numerics: Optional[Numerics] = None) -> "DeviceData":
        ids = np.arange(len(y)) if ids is None else ids
        return cls(device_tensor(x, device), device_tensor(np.asarray(y, dtype=np.int64), device),
                   device_tensor(np.asarray(ids, dtype=np.int64), device), numerics)

    def subset(self, positions: np.ndarray | torch.Tensor) -> "DeviceData":
        p = torch.as_tensor(positions, device=self.x.device, dtype=torch.long)
        return DeviceData(self.x[p], self.y[p], self.ids[p], self.numerics)

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, batch_size: int, generator: torch.Generator, *, pad: int = 0, flip: bool = False,
                shuffle: bool = True, drop_last: bool = False
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield (float input in `numerics`' memory format, labels, ids) batches: a seeded permutation per call,
        augmentation on the device.

        A trailing batch of a single example joins the batch before it (which then has batch_size + 1):
        BatchNorm cannot train on one example whose feature map is 1×1 (VGG on 16×16 digits).
        """
        n = len(self)
        order = (torch.randperm(n, device=self.x.device, generator=generator) if shuffle
                 else torch.arange(n, device=self.x.device))
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for i in range(0, stop, batch_size):
            end = i + batch_size
            if batch_size > 1 and stop - end == 1:
                end = stop  # absorb the lone last example (the loop then has nothing left)
            elif i > 0 and batch_size > 1 and stop - i == 1:
                break  # the lone last example was already absorbed
            idx = order[i:end]
            x = self.x[idx]
            if pad or flip:
                x = augment(x, pad, flip, generator)
            yield self.numerics.input(x), self.y[idx], self.ids[idx]


def make_generator(seed: int, device) -> torch.Generator:
    """A seeded generator on `device`: every random choice of a run (order, crops, flips) comes from it."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g
