"""Datasets by name, as read-only uint8 numpy arrays split into train / validation / test.

Why numpy uint8, channels first: the arrays travel through Ray's object store (zero-copy for numpy) and are
copied to the GPU once, as uint8, where augmentation and normalization happen (DESIGN.md, "Speed").

Every training set is split the way the reference splits CIFAR (reference/algorithms.md §7): per class,
10 % becomes validation, drawn with `np.random.RandomState(split_seed)`; train and validation keep ascending
original-index order, so an example id (a position in `Dataset.train`) maps back to the original training
set through `Dataset.train_index`, and to the dataset's *official* training set — the order published
per-example files (memorization estimates) use — through `Dataset.train_source_index`. The split seed is not a
model seed: the reference always splits with 1.

Sources (the registry `DATASETS` maps each name to its loader):
  digits       scikit-learn's bundled 8×8 handwritten digits, upsampled to 16×16: no download, the embedded default.
  cifar10      the official `cifar-10-batches-py` pickle layout, read here (torchvision only fetches it).
  cifar100     the official `cifar-100-python` pickle layout, likewise.
  imagefolder  any `train/<class>/*` + `test/<class>/*` tree of same-sized images.

Nothing here prints: loaders run inside Ray workers.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .errors import ConfigError, DataError
from .registry import Registry

DATA_DIR_ENV = "UNLEARN_DATA_DIR"
DOWNLOAD_ENV = "UNLEARN_DOWNLOAD"
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


# ------------------------------------------------------------------------------------------------- public

def load_dataset(name: str, data_dir: str | os.PathLike | None = None, split_seed: int = 1,
                 download: bool = False) -> Dataset:
    """Load dataset `name` (see `dataset_names()`) split with `split_seed`.

    `data_dir`: where the files are (CIFAR: the folder holding `cifar-10-batches-py` / `cifar-100-python`,
    default $UNLEARN_DATA_DIR, else ~/.cache/unlearn/data; imagefolder: the tree's root; digits: unused).
    `download` (or UNLEARN_DOWNLOAD=1) lets CIFAR be fetched when its files are missing.
    """
    loader = DATASETS.get(name)
    return loader(data_dir=data_dir, split_seed=_check_split_seed(split_seed), download=download)


def dataset_names() -> list[str]:
    return DATASETS.names()


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

def _check_split_seed(split_seed) -> int:
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)) \
            or not 0 <= split_seed < 2**32:
        raise ConfigError(f"split_seed must be an integer in [0, 2**32), got {split_seed!r}")
    return int(split_seed)


def _channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
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


def _assemble(name: str, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
              num_classes: int, split_seed: int, crop_pad: int, flip: bool,
              mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
              classes: tuple[str, ...] = (), source: np.ndarray | None = None,
              source_size: int | None = None) -> Dataset:
    """Split the original training set (x, y) per class and wrap everything; stats from (x, y) if not given.

    `source[k]`: the position of (x, y)[k] in the official training set of `source_size` (default: (x, y) is
    the official training set)."""
    train_index, val_index = split_per_class(y, num_classes, split_seed)
    if mean is None or std is None:
        mean, std = _channel_stats(x)
    return Dataset(name=name, train=ArraySplit(x[train_index], y[train_index]),
                   val=ArraySplit(x[val_index], y[val_index]), test=ArraySplit(x_test, y_test),
                   num_classes=num_classes, mean=tuple(mean), std=tuple(std), crop_pad=crop_pad, flip=flip,
                   split_seed=split_seed, train_index=train_index, val_index=val_index, classes=classes,
                   train_source_index=None if source is None else np.asarray(source)[train_index],
                   source_size=source_size)


def _resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(data_dir).expanduser()


def _download_allowed(download: bool) -> bool:
    return bool(download) or os.environ.get(DOWNLOAD_ENV, "") == "1"


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
    return _assemble("digits", x[rest], y[rest], x[test], y[test], num_classes=10, split_seed=split_seed,
                     crop_pad=2, flip=False, classes=tuple(str(c) for c in range(10)), source=rest,
                     source_size=len(y))


# -------------------------------------------------------------------------------------------------- CIFAR

@dataclass(frozen=True)
class _CifarSpec:
    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    torchvision_class: str


_CIFAR10 = _CifarSpec("cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                      ("test_batch",), "labels", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                      "CIFAR10")
_CIFAR100 = _CifarSpec("cifar100", "cifar-100-python", ("train",), ("test",), "fine_labels", 100,
                       (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762), "CIFAR100")


@DATASETS.register("cifar10")
def load_cifar10(data_dir=None, split_seed: int = 1, download: bool = False) -> Dataset:
    """CIFAR-10: 45,000 train / 5,000 val / 10,000 test, from the official `cifar-10-batches-py` layout."""
    return _load_cifar(_CIFAR10, data_dir, split_seed, download)


@DATASETS.register("cifar100")
def load_cifar100(data_dir=None, split_seed: int = 1, download: bool = False) -> Dataset:
    """CIFAR-100 (fine labels): 45,000 / 5,000 / 10,000, from the official `cifar-100-python` layout."""
    return _load_cifar(_CIFAR100, data_dir, split_seed, download)


def _load_cifar(spec: _CifarSpec, data_dir, split_seed: int, download: bool) -> Dataset:
    """Read the official pickles ourselves: torchvision's CIFAR classes insist on the archive's MD5 sums,
    which faithful copies written by other tools (e.g. shared/data/make_cifar10.py) cannot match."""
    root = _resolve_data_dir(data_dir)
    if root.name == spec.folder:  # also accept the batches folder itself
        root = root.parent
    folder = root / spec.folder
    missing = _missing_files(spec, folder)
    if missing and _download_allowed(download):
        _download_cifar(spec, root)
        missing = _missing_files(spec, folder)
    if missing:
        raise DataError(
            f"{spec.name}: missing {', '.join(missing)} under {folder}; pass --download (download=True or "
            f"{DOWNLOAD_ENV}=1) to fetch it, or put the official {spec.folder} folder in {root} "
            f"(choose the folder with --data-dir or {DATA_DIR_ENV})")
    x, y = _read_cifar_files(spec, folder, spec.train_files)
    x_test, y_test = _read_cifar_files(spec, folder, spec.test_files)
    return _assemble(spec.name, x, y, x_test, y_test, num_classes=spec.num_classes, split_seed=split_seed,
                     crop_pad=4, flip=True, mean=spec.mean, std=spec.std, classes=_cifar_classes(spec, folder))


def _missing_files(spec: _CifarSpec, folder: Path) -> list[str]:
    return [f for f in spec.train_files + spec.test_files if not (folder / f).is_file()]


def _download_cifar(spec: _CifarSpec, root: Path) -> None:
    """Fetch and unpack the official archive with torchvision (MD5-checked); its chatter is swallowed."""
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import download_and_extract_archive

    cls = getattr(tvd, spec.torchvision_class)
    root.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            download_and_extract_archive(cls.url, download_root=str(root), filename=cls.filename, md5=cls.tgz_md5)
    except Exception as e:  # network, disk or checksum: all mean "no data", said in one line
        raise DataError(f"{spec.name}: download of {cls.url} into {root} failed: {e}") from e


def _unpickle(path: Path) -> dict:
    """Load one CIFAR pickle. Official files are Python-2 pickles with bytes keys; re-written ones may use str."""
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except Exception as e:
        raise DataError(f"cannot read {path}: {e}") from e
    if not isinstance(d, dict):
        raise DataError(f"{path} is not a CIFAR pickle (holds a {type(d).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _read_cifar_files(spec: _CifarSpec, folder: Path, files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in files:
        path = folder / name
        d = _unpickle(path)
        if "data" not in d or spec.label_key not in d:
            raise DataError(f"{path} lacks key 'data' or {spec.label_key!r} (has {sorted(map(str, d))})")
        x = np.asarray(d["data"], dtype=np.uint8)
        y = np.asarray(d[spec.label_key], dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(y) != len(x):
            raise DataError(f"{path}: expected N×3072 pixels and N labels, got {x.shape} and {len(y)} labels")
        if len(y) and (y.min() < 0 or y.max() >= spec.num_classes):
            raise DataError(f"{path}: labels must lie in [0, {spec.num_classes}), got {y.min()}..{y.max()}")
        xs.append(x.reshape(-1, 3, 32, 32))  # rows are R plane, G plane, B plane: already channels first
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _cifar_classes(spec: _CifarSpec, folder: Path) -> tuple[str, ...]:
    """Class names from the meta file when present (optional: labels alone define the classes)."""
    meta_name, key = ("batches.meta", "label_names") if spec.num_classes == 10 else ("meta", "fine_label_names")
    path = folder / meta_name
    if not path.is_file():
        return ()
    names = _unpickle(path).get(key, ())
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return names if len(names) == spec.num_classes else ()


# -------------------------------------------------------------------------------------------- ImageFolder

@DATASETS.register("imagefolder")
def load_imagefolder(data_dir=None, split_seed: int = 1, download: bool = False) -> Dataset:
    """Any `data_dir/train/<class>/*` + `data_dir/test/<class>/*` tree (classes in sorted folder order).

    All images must share one size; they become RGB uint8. Classes may be unequal in size. Mean/std come
    from the training images; crop padding is an eighth of the image side (4 for 32×32). `download` is unused.
    """
    if data_dir is None:
        raise ConfigError("imagefolder needs a data_dir (--data-dir): a folder with train/<class>/* and "
                          "test/<class>/*")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"imagefolder: folder {root} does not exist")
    for sub in ("train", "test"):
        if not (root / sub).is_dir():
            raise DataError(f"imagefolder: no {sub}/ folder in {root}; expected {root}/train/<class>/* and "
                            f"{root}/test/<class>/*")
    x, y, classes = _read_image_tree(root / "train", None)
    x_test, y_test, _ = _read_image_tree(root / "test", classes)
    if x_test.shape[1:] != x.shape[1:]:
        raise DataError(f"imagefolder: test images are {x_test.shape[2]}×{x_test.shape[3]} but train images "
                        f"are {x.shape[2]}×{x.shape[3]} in {root}")
    return _assemble("imagefolder", x, y, x_test, y_test, num_classes=len(classes), split_seed=split_seed,
                     crop_pad=min(x.shape[2:]) // 8, flip=True, classes=classes)


def _read_image_tree(folder: Path, classes: tuple[str, ...] | None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Images of one ImageFolder split as (uint8 N×3×H×W, labels, classes). Test labels follow train's classes."""
    from torchvision.datasets import ImageFolder

    try:
        tree = ImageFolder(str(folder))
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"imagefolder: {e}") from e
    if classes is None:
        classes = tuple(tree.classes)
    unknown = sorted(set(tree.classes) - set(classes))
    if unknown:
        raise DataError(f"imagefolder: {folder} has classes {unknown} that the training set lacks")
    remap = np.array([classes.index(c) for c in tree.classes], dtype=np.int64)
    images, first = [], None
    for path, _ in tree.samples:
        try:
            img = np.asarray(tree.loader(path), dtype=np.uint8)  # PIL, converted to RGB
        except OSError as e:
            raise DataError(f"imagefolder: cannot read image {path}: {e}") from e
        if first is None:
            first = (img.shape, path)
        elif img.shape != first[0]:
            raise DataError(f"imagefolder: {path} is {img.shape[1]}×{img.shape[0]} but {first[1]} is "
                            f"{first[0][1]}×{first[0][0]}; all images must share one size")
        images.append(img)
    x = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))
    y = remap[np.array(tree.targets, dtype=np.int64)]
    return x, y, classes
