"""The carried CIFAR-10 copy as the project reads it: a JPEG `.npz` (benchmarks/README.md) unpacked into the
official python-pickle layout (`cifar-10-batches-py`: data_batch_1..5 and test_batch) that `--data-dir` takes.

The `.npz` is small enough to carry to a machine without internet (≈ 56 MB at JPEG quality 75); the project
itself reads only the pickle layout (`unlearn_core/cifar.py`), so the copy is unpacked once into a temporary
folder. The images are the JPEG round trip of CIFAR-10, in the file's order: a per-class split of them is as
valid as the official one, but per-example files in the official order (`scores:FILE`) do not apply.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = 5


def decode(z, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N×3×32×32, int64 labels) of one split (`train` or `test`) of the JPEG `.npz` `z`."""
    from PIL import Image

    blob, off, y = z[f"{split}_jpeg"], z[f"{split}_offsets"], z[f"{split}_labels"].astype(np.int64)
    x = np.stack([np.asarray(Image.open(io.BytesIO(blob[off[i]:off[i + 1]].tobytes())).convert("RGB"))
                  for i in range(len(y))])
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y


def _write_batch(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    with open(path, "wb") as f:
        pickle.dump({"data": x.reshape(len(x), -1), "labels": [int(v) for v in y]}, f, protocol=4)


def unpack(npz: Path, root: Path) -> Path:
    """Write the pickle layout of `npz` under `root` (root/cifar-10-batches-py/...); returns `root`, the folder
    `--data-dir` names. Training images are split over five batches as the official files are."""
    z = np.load(npz)
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    x, y = decode(z, "train")
    for i, part in enumerate(np.array_split(np.arange(len(y)), TRAIN_BATCHES), 1):
        _write_batch(folder / f"data_batch_{i}", x[part], y[part])
    _write_batch(folder / "test_batch", *decode(z, "test"))
    return root
