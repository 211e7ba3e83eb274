"""Tiny sets and models for the algorithms' specification tests (CPU, float32, no dataset download)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch

from unlearn_core.batching import DeviceData


def tiny_sets(n_forget: int, n_retain: int, classes: int, *, shape=(1, 3, 3), seed: int = 0):
    """(forget, retain) DeviceData of random uint8 images and labels in [0, classes), ids 0..n-1."""
    rng = np.random.default_rng(seed)
    n = n_forget + n_retain
    data = DeviceData.from_arrays(rng.integers(0, 256, (n, *shape), dtype=np.uint8),
                                  rng.integers(0, classes, n), "cpu")
    return data.subset(np.arange(n_forget)), data.subset(np.arange(n_forget, n))


def tiny_model(classes: int, *, shape=(1, 3, 3), batchnorm: bool = False, seed: int = 0) -> torch.nn.Module:
    """A linear classifier (with a BatchNorm in front when asked) and its `num_classes`, as registry models have."""
    torch.manual_seed(seed)
    layers = [torch.nn.BatchNorm2d(shape[0])] if batchnorm else []
    model = torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(int(np.prod(shape)), classes))
    model.num_classes = classes
    return model


@pytest.fixture
def tiny() -> Callable:
    """`tiny(n_forget, n_retain, classes, ...)` → (forget, retain, model): see `tiny_sets` and `tiny_model`."""
    def make(n_forget: int, n_retain: int, classes: int, *, shape=(1, 3, 3), batchnorm: bool = False, seed: int = 0):
        return (*tiny_sets(n_forget, n_retain, classes, shape=shape, seed=seed),
                tiny_model(classes, shape=shape, batchnorm=batchnorm, seed=seed))
    return make
