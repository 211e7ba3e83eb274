"""The containers of a dataset (train / validation / test as read-only uint8 arrays), the per-class split, and
the `DATASETS` registry the loaders (`data.py`, `cifar.py`, `imagefolder.py`) register into.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .errors import ConfigError, DataError
from .registry import Registry

DATA_DIR_ENV = "UNLEARN_DATA_DIR"
DOWNLOAD_ENV = "UNLEARN_DOWNLOAD"
MIRROR_ENV = "UNLEARN_DATA_MIRROR"  # a base URL serving the official archives under their own file names
DEFAULT_DATA_DIR = Path("~/.cache/unlearn/data")
VAL_TENTHS = 1  # validation share of each class, in tenths (reference: 10 %)

Loader = Callable[..., "Dataset"]
DATASETS: Registry[Loader] = Registry("dataset")


# --------------------------------------------------------------------------------------------- containers

def _frozen_array(a: np.ndarray, dtype) -> np.ndarray:
    """`a` as a contiguous `dtype` array, marked read-only (in place when no conversion was needed).

    Frozen dataclasses should not hide mutable buffers: the cached fingerprint would go stale. Ray's object
    store hands out read-only arrays anyway, so consumers must copy before writing in any case.
    """
    a = np.ascontiguousarray(a, dtype=dtype)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class ArraySplit:
    """One split: images uint8 N×C×H×W (channels first) and labels int64 N. Arrays are made read-only."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self):
        if self.x.ndim != 4 or self.x.dtype != np.uint8:
            raise DataError(f"images must be uint8 N×C×H×W, got {self.x.dtype} with shape {self.x.shape}")
        if self.y.ndim != 1 or len(self.y) != len(self.x) or self.y.dtype.kind not in "iu":
            raise DataError(f"labels must be {len(self.x)} integers, got {self.y.dtype} with shape {self.y.shape}")
        object.__setattr__(self, "x", _frozen_array(self.x, np.uint8))
        object.__setattr__(self, "y", _frozen_array(self.y, np.int64))

    def __len__(self) -> int:
        return len(self.y)

    def __setstate__(self, state: dict) -> None:
        """Unpickled arrays come back writable: make them read-only again."""
        self.__dict__.update(state)
        for a in (self.x, self.y):
            a.setflags(write=False)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset split into train (90 % per class) / val (10 % per class) / test, plus what models need to know.

    `train_index[i]` / `val_index[i]` is the position in the original training set of train / val example i
    (both ascending). For `digits`, which has no official test split, the "original training set" is what is
    left after the fixed test hold-out, in scikit-learn's order.

    `train_source_index[i]` is the position of train example i in the dataset's *official* training set of
    `source_size` examples, the order a published per-example file follows (`proxies`' `scores:FILE`). For
    CIFAR and ImageFolder that is the original training set (= `train_index`; CIFAR: the 50,000 of the
    official batches in order). For `digits` it is the whole bundled set of 1,797 in scikit-learn's load order,
    test hold-out included. Neither field enters the fingerprint: both follow from the name and the split.
    """

    name: str
    train: ArraySplit
    val: ArraySplit
    test: ArraySplit
    num_classes: int
    mean: tuple[float, ...]  # per channel, [0, 1] units: the model's normalization layer uses it
    std: tuple[float, ...]
    crop_pad: int  # random-crop padding for augmentation
    flip: bool  # horizontal flips allowed (not for digits)
    split_seed: int
    train_index: np.ndarray
    val_index: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    classes: tuple[str, ...] = ()
    train_source_index: Optional[np.ndarray] = None  # None → train_index
    source_size: Optional[int] = None                # None → len(train) + len(val)

    def __post_init__(self):
        object.__setattr__(self, "train_index", _frozen_array(self.train_index, np.int64))
        object.__setattr__(self, "val_index", _frozen_array(self.val_index, np.int64))
        src = self.train_index if self.train_source_index is None else self.train_source_index
        object.__setattr__(self, "train_source_index", _frozen_array(src, np.int64))
        size = len(self.train) + len(self.val) if self.source_size is None else int(self.source_size)
        object.__setattr__(self, "source_size", size)
        if len(self.train_source_index) != len(self.train) or (
                len(src) and (self.train_source_index.min() < 0 or self.train_source_index.max() >= size)):
            raise DataError(f"{self.name}: train_source_index must hold {len(self.train)} positions in "
                            f"[0, {size})")
        if len(self.train_index) != len(self.train):
            raise DataError(f"{self.name}: train_index has {len(self.train_index)} entries for "
                            f"{len(self.train)} train examples")
        shapes = {s.x.shape[1:] for s in (self.train, self.val, self.test) if len(s)}
        if len(shapes) > 1:
            raise DataError(f"{self.name}: splits differ in image shape: {sorted(shapes)}")

    def __setstate__(self, state: dict) -> None:
        """Unpickled arrays come back writable: make them read-only again (the fingerprint is cached)."""
        self.__dict__.update(state)
        for a in (self.train_index, self.val_index, self.train_source_index):
            a.setflags(write=False)

    @property
    def in_chans(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def image_hw(self) -> tuple[int, int]:
        return int(self.train.x.shape[2]), int(self.train.x.shape[3])

    @property
    def image_size(self) -> int:
        """Image height; every built-in set is square (an ImageFolder tree need not be: see `image_hw`)."""
        return int(self.train.x.shape[2])

    def fingerprint(self) -> str:
        """Short sha256 of everything that makes this dataset what it is; keys the artifact cache.

        Computed once (hashing CIFAR's 180 MB takes a fraction of a second) and kept on the instance; the
        arrays are read-only, so it cannot go stale.
        """
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            h = hashlib.sha256()
            meta = (self.name, self.split_seed, self.num_classes, self.mean, self.std, self.crop_pad,
                    self.flip, self.classes, [s.x.shape for s in (self.train, self.val, self.test)])
            h.update(repr(meta).encode())
            for a in (self.train.x, self.train.y, self.val.x, self.val.y, self.test.x, self.test.y,
                      self.train_index, self.val_index):
                h.update(np.ascontiguousarray(a).view(np.uint8).reshape(-1))
            cached = h.hexdigest()[:16]
            object.__setattr__(self, "_fingerprint", cached)
        return cached


def split_per_class(labels: np.ndarray, num_classes: int, seed: int,
                    tenths: int = VAL_TENTHS) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held_out) positions, both ascending: per class, round(tenths/10 of it) is held out.

    Per class the draw is `RandomState(seed).choice(class_positions, k, replace=False)`, the reference's
    (RUM:dataset.py) — a permutation of that class's positions, first k held out.
    """
    rng = np.random.RandomState(seed)
    held = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx):
            held.append(rng.choice(idx, (len(idx) * tenths + 5) // 10, replace=False))
    mask = np.zeros(len(labels), bool)
    if held:
        mask[np.concatenate(held)] = True
    return np.flatnonzero(~mask).astype(np.int64), np.flatnonzero(mask).astype(np.int64)


# ------------------------------------------------------------------------------------------------ helpers

def check_split_seed(split_seed) -> int:
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)) \
            or not 0 <= split_seed < 2**32:
        raise ConfigError(f"split_seed must be an integer in [0, 2**32), got {split_seed!r}")
    return int(split_seed)


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 N×C×H×W images in [0, 1] units, in chunks (no float copy of all)."""
    c = x.shape[1]
    s, s2 = np.zeros(c), np.zeros(c)
    for i in range(0, len(x), chunk):
        part = x[i:i + chunk].astype(np.float64)
        s += part.sum(axis=(0, 2, 3))
        s2 += np.square(part).sum(axis=(0, 2, 3))
    n = len(x) * x.shape[2] * x.shape[3]
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
    std = np.where(std > 0, std, 255.0)  # a constant channel: avoid dividing by zero later
    return tuple(round(float(v) / 255, 4) for v in mean), tuple(round(float(v) / 255, 4) for v in std)


def assemble(name: str, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
              num_classes: int, split_seed: int, crop_pad: int, flip: bool,
              mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
              classes: tuple[str, ...] = (), source: np.ndarray | None = None,
              source_size: int | None = None) -> Dataset:
    """Split the original training set (x, y) per class and wrap everything; stats from (x, y) if not given.

    `source[k]`: the position of (x, y)[k] in the official training set of `source_size` (default: (x, y) is
    the official training set)."""
    train_index, val_index = split_per_class(y, num_classes, split_seed)
    if mean is None or std is None:
        mean, std = channel_stats(x)
    return Dataset(name=name, train=ArraySplit(x[train_index], y[train_index]),
                   val=ArraySplit(x[val_index], y[val_index]), test=ArraySplit(x_test, y_test),
                   num_classes=num_classes, mean=tuple(mean), std=tuple(std), crop_pad=crop_pad, flip=flip,
                   split_seed=split_seed, train_index=train_index, val_index=val_index, classes=classes,
                   train_source_index=None if source is None else np.asarray(source)[train_index],
                   source_size=source_size)


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(data_dir).expanduser()


def download_allowed(download: bool) -> bool:
    return bool(download) or os.environ.get(DOWNLOAD_ENV, "") == "1"
