"""What the benchmarks run on: the sizes of each mode, the images (synthetic or CIFAR-10), the models and
unlearners as the project builds them, and the trial's `Workspace`.

Sizes are images; "full" is CIFAR-10 as the paper uses it, "tiny" the CPU smoke run. Throughput does not
depend on pixel values, so the default images are synthetic CIFAR-shaped uint8; `--data` gives real ones.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from unlearn_core import neggrad_plus, scrub  # noqa: F401  (importing registers the algorithms)
from unlearn_core.batching import DeviceData
from unlearn_core.data import ArraySplit, Dataset
from unlearn_core.models import create_model
from unlearn_core.training import prepare_model
from unlearn_core.unlearning import ALGORITHMS as REGISTRY
from unlearn_core.unlearning import Unlearner, make_config

HYP: dict[str, dict[str, Any]] = {
    "full": dict(
        data=dict(image=32, classes=10, n_train=50_000, n_test=10_000,  # CIFAR-10's official split sizes
                  retain=45_000, forget=3_000,          # P1: 45k retain + 3k forget (the brief's CIFAR shape)
                  trial_retain=42_000),                 # P2: the paper's 45k train − 3k forget; val = 5k rest
        model=dict(width=1.0),
        run=dict(batch=256,                             # unlearning + training batch (Tables C.1–C.3, CIFAR-10)
                 batch_c100=128,                        # CIFAR-100's training batch (Table C.1)
                 warmup_epochs=1, repeats=3,            # P1 and the classic baseline: per (algorithm, arch)
                 worker_epochs=2, concurrency=(2, 4, 8),  # timed epochs per trial process; process counts
                 trial_repeats=2, trial_epochs=10, trial_max_steps=4,  # P2: SCRUB C10-R18 (Table C.2)
                 train_repeats=2,                       # timed one-epoch `train` calls per (arch, batch)
                 train_epochs=30,                       # --with-training: the CIFAR-10 recipe (Table C.1)
                 io_repeats=3,                          # ArtifactStore save + load
                 ready_timeout_s=300, worker_timeout_s=600),
    ),
    "tiny": dict(  # CI on a 2-core CPU: same code paths, a few hundred 16×16 images, width-0.125 models, 1 epoch
        data=dict(image=16, classes=10, n_train=256, n_test=64, retain=192, forget=32, trial_retain=176),
        model=dict(width=0.125),
        run=dict(batch=64, batch_c100=32, warmup_epochs=1, repeats=2, worker_epochs=1, concurrency=(2,),
                 trial_repeats=2, trial_epochs=1, trial_max_steps=1, train_repeats=2, train_epochs=1,
                 io_repeats=2, ready_timeout_s=150, worker_timeout_s=150),
    ),
}

ALGORITHMS = ("scrub", "neggrad_plus")
ARCHS = ("resnet18", "vgg16_bn")
CROP_PAD = 4            # CIFAR augmentation: 4-pixel padded random crop + horizontal flip
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def load_pool(hyp: dict, data_path: Optional[str], seed: int):
    """(x_train, y_train, x_test, y_test, source): uint8 N×3×S×S and int64 labels, as numpy.

    Synthetic images are hyp's size (16 in --tiny); real ones keep theirs (CIFAR: 32), in every mode."""
    d = hyp["data"]
    n_train, n_test, s = d["n_train"], d["n_test"], d["image"]
    if data_path is None:
        rng = np.random.default_rng(seed)
        return (rng.integers(0, 256, (n_train, 3, s, s), dtype=np.uint8),
                rng.integers(0, d["classes"], n_train).astype(np.int64),
                rng.integers(0, 256, (n_test, 3, s, s), dtype=np.uint8),
                rng.integers(0, d["classes"], n_test).astype(np.int64), "synthetic uint8 (CIFAR-shaped)")
    from PIL import Image

    z = np.load(data_path)
    rng = np.random.default_rng(seed)
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        blob, off, y = z[f"{split}_jpeg"], z[f"{split}_offsets"], z[f"{split}_labels"].astype(np.int64)
        if n > len(y):
            raise SystemExit(f"--data {data_path}: {split} has {len(y)} images, this mode needs {n}")
        idx = rng.permutation(len(y))[:n]  # the file is ordered by class: a seeded shuffle makes the sets random
        x = np.stack([np.asarray(Image.open(io.BytesIO(blob[off[i]:off[i + 1]].tobytes())).convert("RGB"))
                      for i in idx])
        if x.shape[3] != 3 or x.shape[1] != x.shape[2]:
            raise SystemExit(f"--data {data_path}: images are {x.shape[1:]}, expected square RGB (H×W×3)")
        out += [np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y[idx]]
    return (*out, f"{data_path} (CIFAR-10 JPEG copy, seeded subset)")


def p1_sets(x: np.ndarray, y: np.ndarray, hyp: dict, device: torch.device) -> tuple[DeviceData, DeviceData]:
    """P1's (retain, forget) on the device: the first `retain` images of the pool, then `forget` more."""
    r, f = hyp["data"]["retain"], hyp["data"]["forget"]
    return DeviceData.from_arrays(x[:r], y[:r], device), DeviceData.from_arrays(x[r:r + f], y[r:r + f], device)


def warm_size(n: int, bs: int, full_batches: int) -> int:
    """A subset size with the same trailing-batch shape as n: warms cuDNN's autotuner for every shape."""
    return min(n, full_batches * bs + n % bs)


def new_model(arch: str, hyp: dict, device: torch.device, seed: int) -> torch.nn.Module:
    """The project's model as a trial builds it (prepare_model: channels_last + cudnn.benchmark on CUDA)."""
    torch.manual_seed(seed)
    m = create_model(arch, hyp["data"]["classes"], width=hyp["model"]["width"])
    return prepare_model(m, device)


def unlearn_config(algorithm: str, epochs: int, bs: int, *, max_steps: Optional[int] = None, augment=False):
    params = dict(epochs=epochs, forget_batch_size=bs, retain_batch_size=bs, augment=augment)
    if algorithm == "scrub":
        params["max_steps"] = epochs if max_steps is None else max_steps
    return make_config(algorithm, params)


def unlearner(algorithm: str, model: torch.nn.Module, forget: DeviceData, retain: DeviceData, cfg, *,
              seed: int) -> Unlearner:
    """The registered algorithm's unlearner over these sets, built as `Unlearner.for_request` builds it (the
    run driver's call) for a CIFAR workspace: crop padding 4 + flips. Its epochs are `next_epoch()`."""
    return REGISTRY.get(algorithm)(model, forget, retain, cfg, seed=seed, pad=CROP_PAD, flip=True)


def trial_dataset(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, hyp: dict
                  ) -> tuple[Dataset, np.ndarray]:
    """P2's data as the project holds it, and the forget ids: train = the pool's first trial_retain + forget
    images (CIFAR-10: 45k), val = the rest of the pool (5k), test; the forget set is train's last `forget`."""
    d = hyp["data"]
    n = d["trial_retain"] + d["forget"]
    ds = Dataset(name="cifar10", train=ArraySplit(x[:n], y[:n]), val=ArraySplit(x[n:], y[n:]),
                 test=ArraySplit(x_test, y_test), num_classes=d["classes"], mean=CIFAR10_MEAN, std=CIFAR10_STD,
                 crop_pad=CROP_PAD, flip=True, split_seed=1, train_index=np.arange(n, dtype=np.int64),
                 val_index=np.arange(n, len(y), dtype=np.int64))
    return ds, np.arange(d["trial_retain"], n, dtype=np.int64)


def trial_workspace(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, hyp: dict, *,
                    store: Path, device: Optional[str], seed: int):
    """(Workspace, forget ids) of P2 and the artifacts section: ResNet-18 on `trial_dataset`, CIFAR-10's
    training recipe with this mode's epochs, the artifact store in `store` (a temporary folder)."""
    from unlearn_core.spec import ExperimentSpec
    from unlearn_core.workspace import Workspace

    ds, forget_ids = trial_dataset(x, y, x_test, y_test, hyp)
    spec = ExperimentSpec(dataset="cifar10", arch="resnet18", width=hyp["model"]["width"], seed=seed,
                          forget="random", forget_size=len(forget_ids), store=str(store), device=device,
                          train_epochs=hyp["run"]["train_epochs"])
    return Workspace(spec, ds), forget_ids
