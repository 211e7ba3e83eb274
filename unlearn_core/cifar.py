"""CIFAR-10 / CIFAR-100 in the official python-pickle layout (`cifar-10-batches-py`, `cifar-100-python`), read
here; torchvision only fetches it (`--download`)."""
from __future__ import annotations

import contextlib
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import (DATA_DIR_ENV, DATASETS, DOWNLOAD_ENV, MIRROR_ENV, Dataset, assemble, download_allowed,
                      resolve_data_dir)
from .errors import DataError

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
    which faithful copies written by other tools (e.g. re-pickled from another CIFAR mirror) cannot match."""
    root = resolve_data_dir(data_dir)
    if root.name == spec.folder:  # also accept the batches folder itself
        root = root.parent
    folder = root / spec.folder
    missing = _missing_files(spec, folder)
    if missing and download_allowed(download):
        _download_cifar(spec, root, folder)
        missing = _missing_files(spec, folder)
    if missing:
        raise DataError(
            f"{spec.name}: missing {', '.join(missing)} under {folder}; pass --download (download=True or "
            f"{DOWNLOAD_ENV}=1) to fetch it, or put the official {spec.folder} folder in {root} "
            f"(choose the folder with --data-dir or {DATA_DIR_ENV})")
    x, y = _read_cifar_files(spec, folder, spec.train_files)
    x_test, y_test = _read_cifar_files(spec, folder, spec.test_files)
    return assemble(spec.name, x, y, x_test, y_test, num_classes=spec.num_classes, split_seed=split_seed,
                     crop_pad=4, flip=True, mean=spec.mean, std=spec.std, classes=_cifar_classes(spec, folder))


def _missing_files(spec: _CifarSpec, folder: Path) -> list[str]:
    return [f for f in spec.train_files + spec.test_files if not (folder / f).is_file()]


def _download_cifar(spec: _CifarSpec, root: Path, folder: Path) -> None:
    """Fetch and unpack the official archive with torchvision (MD5-checked; from UNLEARN_DATA_MIRROR when set);
    processes of one machine that ask at once take turns on a lock file, and only the first one downloads."""
    import torchvision.datasets as tvd
    from filelock import FileLock
    from torchvision.datasets.utils import download_and_extract_archive

    cls = getattr(tvd, spec.torchvision_class)
    mirror = os.environ.get(MIRROR_ENV)
    url = f"{mirror.rstrip('/')}/{cls.filename}" if mirror else cls.url
    try:
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / f".{spec.folder}.lock")):
            if not _missing_files(spec, folder):  # another process fetched it while this one waited
                return
            with contextlib.redirect_stdout(io.StringIO()):
                download_and_extract_archive(url, download_root=str(root), filename=cls.filename, md5=cls.tgz_md5)
    except Exception as e:  # network, disk or checksum: all mean "no data", said in one line
        why = " ".join(str(e).split())[:300]
        raise DataError(f"{spec.name}: download of {url} into {root} failed: {type(e).__name__}: {why}") from None


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
