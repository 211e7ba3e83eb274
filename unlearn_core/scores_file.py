"""Memorization scores read from a file (`--proxy scores:FILE`): one score per example of the dataset's official
training set, in its official order (the format of the published CIFAR estimates: Feldman & Zhang for
CIFAR-100, Zhao et al. for CIFAR-10), mapped to the training split's ids and cached like any proxy's scores.
"""
from __future__ import annotations

import hashlib
import io
import os
import time

import numpy as np
import torch

from .artifacts import artifact_key
from .errors import ConfigError
from .workspace import Workspace

SCORES_ARRAYS = ("memorization", "tr_mem", "scores")  # names looked for in a .npz, in this order


_FILE_CACHE: dict = {}


def read_scores_file(path: str) -> tuple[np.ndarray, str, str]:
    """(scores as float64, the array's name in a .npz or "" for a .npy, the file's sha256) of a scores file.

    Raises:
        ConfigError: no such file, not a numpy file, no 1-D numeric array, or NaN/inf values (one line each).
    """
    what = f"scores file {path}"
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConfigError(f"{what}: {e.strerror or e} (--proxy scores:FILE needs a .npy or .npz of memorization "
                          "scores)") from None
    if not os.path.isfile(path):
        raise ConfigError(f"{what}: not a file")
    stamp = (os.path.realpath(path), st.st_mtime_ns, st.st_size)
    if stamp in _FILE_CACHE:
        arr, key, sha = _FILE_CACHE[stamp]
        return arr.copy(), key, sha
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise ConfigError(f"{what}: cannot read it ({e.strerror or e})") from None
    sha = hashlib.sha256(blob).hexdigest()
    try:
        obj = np.load(io.BytesIO(blob), allow_pickle=False)
    except Exception as e:  # numpy raises ValueError/OSError/EOFError/... for what is not its format
        raise ConfigError(f"{what}: not a .npy or .npz numpy file ({' '.join(str(e).split())})") from None
    key = ""
    if hasattr(obj, "files"):  # .npz
        if not obj.files:
            raise ConfigError(f"{what}: the .npz holds no arrays")
        key = next((k for k in SCORES_ARRAYS if k in obj.files), obj.files[0])
        try:
            obj = obj[key]
        except Exception as e:
            raise ConfigError(f"{what}: cannot read array {key!r} ({' '.join(str(e).split())})") from None
    arr = np.asarray(obj)
    where = f"{what}{f' (array {key!r})' if key else ''}"
    if arr.ndim != 1 or arr.dtype.kind not in "biuf":
        raise ConfigError(f"{where}: expected a 1-D array of numbers (one score per example), got {arr.dtype} "
                          f"with shape {arr.shape}")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ConfigError(f"{where}: {int(bad.sum())} of its {len(arr)} scores are NaN or inf (first at index "
                          f"{int(np.flatnonzero(bad)[0])})")
    _FILE_CACHE[stamp] = (arr, key, sha)
    return arr.copy(), key, sha


def scores_for_dataset(arr: np.ndarray, path: str, data) -> np.ndarray:
    """The scores of the training split's ids from scores in the official training order of `data.Dataset`."""
    if len(arr) != data.source_size:
        raise ConfigError(f"scores file {path}: has {len(arr)} scores, expected {data.source_size} (one per example "
                          f"of {data.name}'s official training set, in its official order)")
    return arr[data.train_source_index]


def from_file(ws: Workspace, proxy: str, path: str, return_info: bool):
    arr, array, sha = read_scores_file(path)
    key = artifact_key("proxy", proxy="scores", sha256=sha, array=array, data=ws.data.fingerprint())
    source = (f"scores file {path}{f' array {array!r}' if array else ''} (sha256 {sha[:16]}), official training "
              "order mapped to the training split's ids")

    def build() -> dict:
        t0 = time.perf_counter()
        scores = scores_for_dataset(arr, path, ws.data)
        return {"scores": torch.from_numpy(np.ascontiguousarray(scores)), "seconds": time.perf_counter() - t0,
                "proxy": "scores", "source": source, "sha256": sha}

    art, built = ws.store.get_or_build("proxy", key, build)
    scores = art["scores"].numpy().astype(np.float64, copy=True)
    if not return_info:
        return scores
    return scores, {"proxy": proxy, "model": "file", "source": source, "follows_model": False, "sha256": sha,
                    "built": built, "seconds": float(art["seconds"]) if built else 0.0}
