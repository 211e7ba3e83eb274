"""Any `train/<class>/*` + `test/<class>/*` tree of same-sized images (unequal classes fine)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .dataset import DATASETS, Dataset, assemble
from .errors import ConfigError, DataError

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
    return assemble("imagefolder", x, y, x_test, y_test, num_classes=len(classes), split_seed=split_seed,
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
