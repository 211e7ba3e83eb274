"""Datasets by name, as read-only uint8 numpy arrays split into train / validation / test.

Why numpy uint8, channels first: the arrays travel through Ray's object store (zero-copy for numpy) and are
copied to the GPU once, as uint8, where augmentation and normalization happen (no CPU data workers).

Every training set is split the way the RUM code splits CIFAR (its `dataset.py`): per class,
10 % becomes validation, drawn with `np.random.RandomState(split_seed)`; train and validation keep ascending
original-index order, so an example id (a position in `Dataset.train`) maps back to the original training
set through `Dataset.train_index`, and to the dataset's *official* training set — the order published
per-example files (memorization estimates) use — through `Dataset.train_source_index`. The split seed is not a
model seed: the RUM code always splits with 1.

Sources (the registry `DATASETS` maps each name to its loader):
  digits       scikit-learn's bundled 8×8 handwritten digits, upsampled to 16×16: no download, the embedded default.
  cifar10      the official `cifar-10-batches-py` pickle layout, read here (torchvision only fetches it).
  cifar100     the official `cifar-100-python` pickle layout, likewise.
  imagefolder  any `train/<class>/*` + `test/<class>/*` tree of same-sized images.

Nothing here prints: loaders run inside Ray workers.
"""
from __future__ import annotations

import os

import numpy as np

from . import cifar, imagefolder  # noqa: F401  (register their loaders)
from .dataset import DATASETS, ArraySplit, Dataset, assemble, check_split_seed, split_per_class  # noqa: F401

# ------------------------------------------------------------------------------------------------- public

def load_dataset(name: str, data_dir: str | os.PathLike | None = None, split_seed: int = 1,
                 download: bool = False) -> Dataset:
    """Load dataset `name` (see `dataset_names()`) split with `split_seed`.

    `data_dir`: where the files are (CIFAR: the folder holding `cifar-10-batches-py` / `cifar-100-python`,
    default $UNLEARN_DATA_DIR, else ~/.cache/unlearn/data; imagefolder: the tree's root; digits: unused).
    `download` (or UNLEARN_DOWNLOAD=1) lets CIFAR be fetched when its files are missing.
    """
    loader = DATASETS.get(name)
    return loader(data_dir=data_dir, split_seed=check_split_seed(split_seed), download=download)


def dataset_names() -> list[str]:
    return DATASETS.names()



# ------------------------------------------------------------------------------------------------- digits

@DATASETS.register("digits")
def load_digits(data_dir=None, split_seed: int = 1, download: bool = False) -> Dataset:
    """scikit-learn's 1,797 real 8×8 digits (values 0..16) as uint8 16×16, one channel.

    16×16 (nearest upsampling) so that VGG's four max-pools still leave a 1×1 map. There is no official
    test split, so ~20 % per class is held out with the fixed seed 0 — the test set never depends on
    `split_seed` — and the rest is split 90/10 like every dataset. No flips: digits are not mirror-symmetric.
    `data_dir` and `download` are unused (the data ship with scikit-learn). The "official training set" of a
    per-example scores file is all 1,797 in load order (`Dataset.train_source_index`).
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = np.rint(bunch.images * (255 / 16)).astype(np.uint8)[:, None]
    x = x.repeat(2, axis=2).repeat(2, axis=3)
    y = bunch.target.astype(np.int64)
    rest, test = split_per_class(y, 10, seed=0, tenths=2)
    return assemble("digits", x[rest], y[rest], x[test], y[test], num_classes=10, split_seed=split_seed,
                     crop_pad=2, flip=False, classes=tuple(str(c) for c in range(10)), source=rest,
                     source_size=len(y))
