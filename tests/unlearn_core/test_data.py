"""Datasets on real data: scikit-learn's digits, and CIFAR-10 (in both on-disk layouts), CIFAR-100 and image
folders written here in their official layouts."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from unlearn_core.data import DATASETS, load_dataset, dataset_names, split_per_class
from unlearn_core.errors import ConfigError, DataError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _original(ds):
    """Rebuild the original training set (before the train/val split) from the two parts and their indices."""
    n = len(ds.train) + len(ds.val)
    x = np.empty((n,) + ds.train.x.shape[1:], np.uint8)
    y = np.full(n, -1, np.int64)
    x[ds.train_index], y[ds.train_index] = ds.train.x, ds.train.y
    x[ds.val_index], y[ds.val_index] = ds.val.x, ds.val.y
    return x, y


def _check_split(ds):
    """train/val: disjoint, ascending, covering the original set, and 10 % (rounded) of every class in val."""
    assert np.all(np.diff(ds.train_index) > 0) and np.all(np.diff(ds.val_index) > 0)
    assert np.intersect1d(ds.train_index, ds.val_index).size == 0
    n = len(ds.train) + len(ds.val)
    assert np.array_equal(np.union1d(ds.train_index, ds.val_index), np.arange(n))
    _, y = _original(ds)
    assert (y >= 0).all()
    for c in range(ds.num_classes):
        total = int((y == c).sum())
        assert int((ds.val.y == c).sum()) == (total + 5) // 10, f"class {c}"


# ------------------------------------------------------------------------------------------------- digits

@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_registry_names():
    assert dataset_names() == ["cifar10", "cifar100", "digits", "imagefolder"]
    assert "digits" in DATASETS


def test_digits_shapes_and_properties(digits):
    d = digits
    assert len(d.train) + len(d.val) + len(d.test) == 1797
    assert (len(d.train), len(d.val)) == (1293, 145)
    for s in (d.train, d.val, d.test):
        assert s.x.dtype == np.uint8 and s.x.shape[1:] == (1, 16, 16)
        assert s.y.dtype == np.int64 and s.y.min() == 0 and s.y.max() == 9
        assert not s.x.flags.writeable  # frozen: the cached fingerprint cannot go stale
    assert d.train.x.max() == 255 and d.train.x.min() == 0
    assert (d.num_classes, d.in_chans, d.image_size, d.crop_pad, d.flip) == (10, 1, 16, 2, False)
    # nearest upsampling: every 2×2 block is one original pixel
    assert np.array_equal(d.train.x[:, :, ::2, ::2], d.train.x[:, :, 1::2, 1::2])
    x, _ = _original(d)
    pix = x.astype(np.float64) / 255
    assert d.mean == pytest.approx((pix.mean(),), abs=1e-4)
    assert d.std == pytest.approx((pix.std(),), abs=1e-4)


def test_digits_split_per_class(digits):
    _check_split(digits)
    # the fixed test hold-out is ~20 % of every class
    for c in range(10):
        n_test = int((digits.test.y == c).sum())
        assert 0.18 <= n_test / (n_test + int((digits.train.y == c).sum() + (digits.val.y == c).sum())) <= 0.22


def test_digits_deterministic_and_seeded(digits):
    again = load_dataset("digits", split_seed=1)
    assert np.array_equal(again.train.x, digits.train.x) and np.array_equal(again.val_index, digits.val_index)
    assert again.fingerprint() == digits.fingerprint() and len(digits.fingerprint()) == 16

    other = load_dataset("digits", split_seed=2)
    _check_split(other)
    assert not np.array_equal(other.val_index, digits.val_index)
    assert other.fingerprint() != digits.fingerprint()
    # same original training set and the same test set whatever the split seed
    for a, b in zip(_original(other), _original(digits)):
        assert np.array_equal(a, b)
    assert np.array_equal(other.test.x, digits.test.x) and np.array_equal(other.test.y, digits.test.y)


def test_split_per_class_matches_reference_draw():
    """The reference draws each class's validation ids with RandomState(seed).choice(class_ids, k, replace=False)."""
    y = np.repeat(np.arange(3), 20)[np.random.RandomState(5).permutation(60)]
    keep, held = split_per_class(y, 3, seed=1)
    rng = np.random.RandomState(1)
    expected = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), 2, replace=False) for c in range(3)]))
    assert np.array_equal(held, expected)
    assert np.array_equal(keep, np.setdiff1d(np.arange(60), expected))


def test_bad_split_seed():
    with pytest.raises(ConfigError, match="split_seed"):
        load_dataset("digits", split_seed=-1)


# ------------------------------------------------------------------------------------- CIFAR-10, real images

def _write_cifar10(cifar: Path, folder: Path, per_class_train: int = 50, per_class_test: int = 10) -> None:
    """The same noise images, CIFAR-10's per-channel mean and std, in both layouts: the official
    `cifar-10-batches-py` pickles (5 training batches, bytes keys) under `cifar`, and PNGs in `train/<class>/`,
    `test/<class>/` under `folder`."""
    from PIL import Image

    rng = np.random.default_rng(0)
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])
    batches = cifar / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for split, per, files in (("train", per_class_train, [f"data_batch_{i}" for i in range(1, 6)]),
                              ("test", per_class_test, ["test_batch"])):
        y = np.tile(np.arange(10), per)
        x = np.clip(rng.normal(mean * 255, std * 255, (len(y), 32, 32, 3)), 0, 255).round().astype(np.uint8)
        for part, idx in zip(files, np.array_split(np.arange(len(y)), len(files))):
            data = x[idx].transpose(0, 3, 1, 2).reshape(len(idx), -1)  # rows: R plane, G plane, B plane
            with open(batches / part, "wb") as f:
                pickle.dump({b"data": data, b"labels": y[idx].tolist()}, f, protocol=2)
        for i, (img, label) in enumerate(zip(x, y)):
            out = folder / split / CIFAR10_CLASSES[label]
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(out / f"{i}.png")
    with open(batches / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, f, protocol=2)


@pytest.fixture(scope="module")
def cifar10_roots(tmp_path_factory):
    roots = {layout: tmp_path_factory.mktemp(f"c10_{layout}") for layout in ("cifar", "imagefolder")}
    _write_cifar10(roots["cifar"], roots["imagefolder"])
    return roots


@pytest.fixture(scope="module")
def cifar10_pair(cifar10_roots):
    return (load_dataset("cifar10", data_dir=cifar10_roots["cifar"]),
            load_dataset("imagefolder", data_dir=cifar10_roots["imagefolder"]))


def test_cifar10_pickle_layout(cifar10_pair):
    d, _ = cifar10_pair
    assert (len(d.train), len(d.val), len(d.test)) == (450, 50, 100)
    assert d.train.x.shape[1:] == (3, 32, 32) and d.train.x.dtype == np.uint8
    assert (d.num_classes, d.crop_pad, d.flip) == (10, 4, True)
    assert d.mean == (0.4914, 0.4822, 0.4465) and d.std == (0.2470, 0.2435, 0.2616)
    assert d.classes == CIFAR10_CLASSES
    assert np.array_equal(np.bincount(d.train.y), [45] * 10)
    assert np.array_equal(np.bincount(d.val.y), [5] * 10)
    assert np.array_equal(np.bincount(d.test.y), [10] * 10)
    _check_split(d)


def test_cifar10_imagefolder_layout_agrees(cifar10_pair):
    d, f = cifar10_pair
    assert f.name == "imagefolder" and f.classes == CIFAR10_CLASSES
    assert (len(f.train), len(f.val), len(f.test)) == (450, 50, 100)
    assert (f.num_classes, f.in_chans, f.image_size, f.crop_pad, f.flip) == (10, 3, 32, 4, True)
    for a, b in ((d.train, f.train), (d.val, f.val), (d.test, f.test)):
        assert np.array_equal(np.bincount(a.y, minlength=10), np.bincount(b.y, minlength=10))
    _check_split(f)
    # both layouts hold the same 500 training images: the two readers must decode the same pixels and labels
    def pairs(ds):
        x, y = _original(ds)
        return sorted((xi.tobytes(), int(yi)) for xi, yi in zip(x, y))
    assert pairs(d) == pairs(f)
    # mean/std come from the images themselves, close to CIFAR-10's
    assert f.mean == pytest.approx(d.mean, abs=0.03) and f.std == pytest.approx(d.std, abs=0.03)


def test_cifar10_data_dir_from_env_and_batches_folder(cifar10_roots, cifar10_pair, monkeypatch):
    monkeypatch.setenv("UNLEARN_DATA_DIR", str(cifar10_roots["cifar"]))
    assert load_dataset("cifar10").fingerprint() == cifar10_pair[0].fingerprint()
    direct = load_dataset("cifar10", data_dir=cifar10_roots["cifar"] / "cifar-10-batches-py")
    assert direct.fingerprint() == cifar10_pair[0].fingerprint()


def test_cifar10_missing_batch_file(cifar10_roots, tmp_path):
    shutil.copytree(cifar10_roots["cifar"] / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3") as e:
        load_dataset("cifar10", data_dir=tmp_path)
    msg = str(e.value)
    assert "data_batch_1" not in msg and str(tmp_path / "cifar-10-batches-py") in msg and "--download" in msg
    assert "\n" not in msg


# ------------------------------------------------------------------------------------ CIFAR-100, tiny pickles

def _write_cifar100(root: Path, per_class_train: int = 5, per_class_test: int = 1) -> Path:
    """Official `cifar-100-python` layout (Python-2 style pickles: bytes keys); pixel (i, channel k) = (3i+k) % 251."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, per in (("train", per_class_train), ("test", per_class_test)):
        fine = np.tile(np.arange(100), per)
        n = len(fine)
        planes = (3 * np.arange(n)[:, None] + np.arange(3)[None, :]) % 251  # n×3
        data = np.repeat(planes, 1024, axis=1).astype(np.uint8)  # R plane, G plane, B plane
        with open(folder / name, "wb") as f:
            pickle.dump({b"filenames": [b"x.png"] * n, b"batch_label": name.encode(), b"fine_labels": fine.tolist(),
                         b"coarse_labels": (fine // 5).tolist(), b"data": data}, f, protocol=2)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                     b"coarse_label_names": [f"s{i}".encode() for i in range(20)]}, f, protocol=2)
    return folder


def test_cifar100_official_layout(tmp_path):
    _write_cifar100(tmp_path)
    d = load_dataset("cifar100", data_dir=tmp_path, split_seed=3)
    assert (len(d.train), len(d.val), len(d.test)) == (400, 100, 100)
    assert (d.num_classes, d.crop_pad, d.flip) == (100, 4, True)
    assert d.mean == (0.5071, 0.4866, 0.4409) and d.classes[:2] == ("c0", "c1") and len(d.classes) == 100
    assert np.array_equal(np.bincount(d.val.y, minlength=100), np.ones(100))
    _check_split(d)
    # rows are channel planes: channel k of original example i is (3i+k) % 251 everywhere
    expected = (3 * d.train_index[:, None] + np.arange(3)[None, :]) % 251
    assert np.array_equal(d.train.x[:, :, 5, 7], expected)
    assert np.array_equal(d.train.y, np.tile(np.arange(100), 5)[d.train_index])


def test_cifar100_missing_test_file(tmp_path):
    (_write_cifar100(tmp_path) / "test").unlink()
    with pytest.raises(DataError, match=r"missing test under .*cifar-100-python"):
        load_dataset("cifar100", data_dir=tmp_path)


# ------------------------------------------------------------------------------------------------ bad input

def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ConfigError, match="unknown dataset 'mnist'.*cifar10, cifar100, digits, imagefolder"):
        load_dataset("mnist")


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match="--download") as e:
        load_dataset("cifar10", data_dir=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(e.value)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("imagefolder", data_dir=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="data_dir"):
        load_dataset("imagefolder")


def _write_pngs(folder: Path, sizes: list[tuple[int, int]]) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(np.full((h, w, 3), (40 * i) % 256, np.uint8)).save(folder / f"{i}.png")


def test_imagefolder_without_test_folder(tmp_path):
    _write_pngs(tmp_path / "train" / "a", [(8, 8)] * 3)
    with pytest.raises(DataError, match=r"no test/ folder") as e:
        load_dataset("imagefolder", data_dir=tmp_path)
    assert str(tmp_path) in str(e.value)


def test_imagefolder_mixed_sizes_and_unequal_classes(tmp_path):
    _write_pngs(tmp_path / "train" / "a", [(8, 8)] * 12)
    _write_pngs(tmp_path / "train" / "b", [(8, 8)] * 3)
    _write_pngs(tmp_path / "test" / "b", [(8, 8)] * 2)  # test may lack a class: labels follow train's classes
    d = load_dataset("imagefolder", data_dir=tmp_path)
    assert d.classes == ("a", "b") and np.array_equal(d.test.y, [1, 1])
    assert (len(d.train), len(d.val), d.crop_pad, d.in_chans) == (14, 1, 1, 3)  # round(10 %): 12 → 1, 3 → 0
    _write_pngs(tmp_path / "train" / "b", [(8, 8), (9, 8)])
    with pytest.raises(DataError, match="share one size"):
        load_dataset("imagefolder", data_dir=tmp_path)
