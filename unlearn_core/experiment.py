"""One unlearning experiment end to end: original → forget set → retrain → unlearn → metrics.

`Workspace` holds what every run on one (dataset, arch, width, seed) shares: the data resident on the device,
the artifact store, and the training recipe. Originals, retrains and the retrained model's metrics are built
once and cached in the store by content (see artifacts.py), so the tuner's trials, the CLI and the study all
reuse them. `run_experiment` is the single-run entry point; the tuner drives the same pieces epoch by epoch.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch

from . import finetune, neggrad_plus, scrub  # noqa: F401  (registers the algorithms)
from .artifacts import ArtifactStore, artifact_key
from .batching import DeviceData
from .data import Dataset, load_dataset
from .errors import ConfigError, LossDiverged
from .forget import class_forget, random_forget, retain_ids, validate_ids
from .metrics import evaluate, tow, tow_mia
from .models import create_model
from .training import TrainConfig, pick_device, prepare_model, recipe_for, train
from .unlearning import config_dict, create_unlearner, make_config

# Width-reduced models where full width is pointless (8×8 digits upsampled to 16×16) or too slow on a CPU.
DEFAULT_WIDTH = {"digits": 0.25}
# Forget-set size: the paper's 3,000 of CIFAR's 45,000 (6.7 %); digits scaled to about the same share.
DEFAULT_FORGET_SIZE = {"digits": 90}
FORGET_KINDS = ("random", "class", "mix")


def default_store() -> str:
    return os.environ.get("UNLEARN_STORE", os.path.join(os.path.expanduser("~"), ".cache", "unlearn", "artifacts"))


@dataclass(frozen=True)
class ExperimentSpec:
    """Everything that fixes the models and sets of one experiment (not the unlearning hyperparameters)."""

    dataset: str = "digits"
    arch: str = "resnet18"
    width: Optional[float] = None          # channel multiplier; None → DEFAULT_WIDTH or 1.0
    seed: int = 0                          # model seed: original, retrain, forget selection, unlearning
    split_seed: int = 1                    # train/val split seed (RUM always uses 1), separate from `seed`
    forget: str = "random"                 # random | class | mix (mix needs a memorization proxy)
    forget_size: Optional[int] = None      # None → DEFAULT_FORGET_SIZE or 3,000
    forget_classes: tuple[int, ...] = (0,)  # for forget="class"
    proxy: str = "confidence"              # memorization proxy for forget="mix" and RUM
    data_dir: Optional[str] = None
    store: Optional[str] = None            # artifact store root (folder or fsspec URI)
    device: Optional[str] = None
    train_epochs: Optional[int] = None     # override the recipe's epochs (tests, quick runs)

    def __post_init__(self):
        if self.forget not in FORGET_KINDS:
            raise ConfigError(f"unknown forget kind {self.forget!r}; valid: {', '.join(FORGET_KINDS)}")
        if self.width is not None and not self.width > 0:
            raise ConfigError(f"width must be > 0, got width={self.width}")
        if self.forget_size is not None and self.forget_size < 1:
            raise ConfigError(f"forget_size must be >= 1, got forget_size={self.forget_size}")
        if self.train_epochs is not None and self.train_epochs < 1:
            raise ConfigError(f"train_epochs must be >= 1, got train_epochs={self.train_epochs}")

    @property
    def resolved_width(self) -> float:
        return self.width if self.width is not None else DEFAULT_WIDTH.get(self.dataset, 1.0)

    @property
    def resolved_forget_size(self) -> int:
        return self.forget_size or DEFAULT_FORGET_SIZE.get(self.dataset, 3000)


def environment() -> dict:
    """Versions and device, recorded with every result."""
    import sklearn

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return {"torch": str(torch.__version__), "numpy": np.__version__, "sklearn": sklearn.__version__,
            "python": platform.python_version(), "device": dev}


class Workspace:
    """Data on the device + artifact store + recipe for one ExperimentSpec; builds/caches models on demand."""

    def __init__(self, spec: ExperimentSpec, dataset: Optional[Dataset] = None, *,
                 log: Callable[[str], None] = lambda s: None):
        self.spec, self.log = spec, log
        self.data = dataset if dataset is not None else load_dataset(spec.dataset, spec.data_dir, spec.split_seed)
        self.device = pick_device(spec.device)
        d = self.data
        self.train = DeviceData.from_arrays(d.train.x, d.train.y, self.device)
        self.val = DeviceData.from_arrays(d.val.x, d.val.y, self.device)
        self.test = DeviceData.from_arrays(d.test.x, d.test.y, self.device)
        self.store = ArtifactStore(spec.store or default_store())
        self.recipe: TrainConfig = recipe_for(spec.dataset, epochs=spec.train_epochs)
        self.width = spec.resolved_width

    # --- identities -----------------------------------------------------------------------------------
    def _base_parts(self) -> dict:
        return {"data": self.data.fingerprint(), "arch": self.spec.arch, "width": self.width,
                "recipe": dataclasses.asdict(self.recipe), "seed": self.spec.seed}

    def new_model(self) -> torch.nn.Module:
        torch.manual_seed(self.spec.seed)  # initial weights are part of what `seed` fixes
        d = self.data
        m = create_model(self.spec.arch, d.num_classes, in_chans=d.in_chans, width=self.width, mean=d.mean, std=d.std)
        return prepare_model(m, self.device)

    def load_model(self, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        m = self.new_model()
        m.load_state_dict(state)
        return m

    def _train_fresh(self, ids: np.ndarray, *, record_events: bool, what: str) -> dict:
        model = self.new_model()
        sub = self.train.subset(ids)
        self.log(f"training {what}: {self.spec.arch} on {len(ids)} {self.spec.dataset} examples, "
                 f"{self.recipe.epochs} epochs ({self.device})")
        res = train(model, sub, self.recipe, seed=self.spec.seed, pad=self.data.crop_pad, flip=self.data.flip,
                    record_events=record_events, num_ids=len(self.train),
                    on_epoch=lambda e, s: self.log(f"  {what} epoch {e + 1}/{self.recipe.epochs} loss {s['loss']:.4f}"))
        out = {"state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "seconds": res.seconds, "env": environment()}
        if res.events is not None:
            ev = res.events
            out["events"] = {k: torch.from_numpy(getattr(ev, k).copy()) for k in ("confidence", "max_conf", "neg_entropy", "correct")}
        return out

    # --- artifacts --------------------------------------------------------------------------------------
    def original(self) -> tuple[torch.nn.Module, dict]:
        """The original model (trained on the whole training split, learning events recorded), cached."""
        key = artifact_key("original", **self._base_parts())
        art, built = self.store.get_or_build(
            "original", key, lambda: self._train_fresh(np.arange(len(self.train)), record_events=True, what="original"))
        if not built:
            self.log(f"original {self.spec.arch} seed {self.spec.seed}: loaded from the store")
        return self.load_model(art["state"]), art

    def retrain(self, forget_ids: np.ndarray) -> tuple[torch.nn.Module, dict]:
        """The model retrained from scratch on train − forget_ids (the ToW reference), cached."""
        forget_ids = np.sort(np.asarray(forget_ids, dtype=np.int64))
        key = artifact_key("retrain", forget=forget_ids, **self._base_parts())
        keep = retain_ids(len(self.train), forget_ids)
        art, built = self.store.get_or_build(
            "retrain", key, lambda: self._train_fresh(keep, record_events=False, what="retrain"))
        if not built:
            self.log(f"retrain ({len(forget_ids)} forgotten): loaded from the store")
        return self.load_model(art["state"]), art

    def retrain_metrics(self, forget_ids: np.ndarray) -> dict:
        """Accuracies and MIA of the retrained model on these sets (cached with it: the MIA costs CPU seconds)."""
        forget_ids = np.sort(np.asarray(forget_ids, dtype=np.int64))
        key = artifact_key("retrain_metrics", forget=forget_ids, **self._base_parts())

        def build():
            model, art = self.retrain(forget_ids)
            m = self.evaluate(model, forget_ids)
            return {"metrics": m, "seconds": art["seconds"]}

        art, _ = self.store.get_or_build("retrain_metrics", key, build)
        return {**art["metrics"], "seconds": float(art["seconds"])}

    def retrain_metrics_for(self, forget_ids: np.ndarray, earlier: Sequence[np.ndarray] = ()) -> dict:
        """`retrain_metrics` for request j of a sequence (reference §3.5), cached.

        The model retrained from scratch on train − (F1 ∪ … ∪ Fj) (`retrain` of the union), evaluated on
        forget = Fj (`forget_ids`) and retain = train − (F1 ∪ … ∪ Fj); `earlier` = [F1, …, Fj−1]. Keyed on
        both Fj and the earlier union. With no earlier sets it is `retrain_metrics(forget_ids)` (same cache).
        """
        forget_ids = np.sort(np.asarray(forget_ids, dtype=np.int64))
        earlier = [np.asarray(e, dtype=np.int64).reshape(-1) for e in earlier]
        earlier = [e for e in earlier if e.size]
        if not earlier:
            return self.retrain_metrics(forget_ids)
        excluded = np.setdiff1d(np.concatenate(earlier), forget_ids)  # sorted, distinct
        union = np.union1d(forget_ids, excluded)
        key = artifact_key("retrain_metrics", forget=forget_ids, excluded=excluded, **self._base_parts())

        def build():
            model, art = self.retrain(union)
            return {"metrics": self.evaluate(model, forget_ids, excluded), "seconds": art["seconds"]}

        art, _ = self.store.get_or_build("retrain_metrics", key, build)
        return {**art["metrics"], "seconds": float(art["seconds"])}

    # --- sets ---------------------------------------------------------------------------------------------
    def select_forget(self, pool: Optional[np.ndarray] = None, *, scores: Optional[np.ndarray] = None) -> np.ndarray:
        """The forget ids of this spec from `pool` (default: the whole training split)."""
        s = self.spec
        pool = np.arange(len(self.train)) if pool is None else pool
        if s.forget == "random":
            return random_forget(pool, s.resolved_forget_size, s.seed)
        if s.forget == "class":
            return class_forget(self.data.train.y, s.forget_classes, pool)
        from .forget import mix
        from .proxies import memorization  # late: proxies builds on this module

        if scores is None:  # the proxy of the original model (cached in the store like the models)
            scores = memorization(self, s.proxy)
        return mix(scores, s.resolved_forget_size, pool)

    def sets(self, forget_ids: np.ndarray, *exclude: np.ndarray) -> tuple[DeviceData, DeviceData]:
        """(forget, retain) on the device; retain = train − forget − every set in `exclude`."""
        validate_ids(forget_ids, len(self.train))
        keep = retain_ids(len(self.train), forget_ids, *exclude)
        if len(keep) == 0:
            raise ConfigError("the retain set is empty: the forget set covers the whole training split")
        return self.train.subset(forget_ids), self.train.subset(keep)

    def evaluate(self, model: torch.nn.Module, forget_ids: np.ndarray, *exclude: np.ndarray) -> dict:
        """forget/retain/val/test accuracy (%) and the SVC MIA (`mia`, 0–1) of `model` for these sets."""
        forget, retain = self.sets(forget_ids, *exclude)
        return evaluate(model, {"forget": (forget.x, forget.y), "retain": (retain.x, retain.y),
                                "val": (self.val.x, self.val.y), "test": (self.test.x, self.test.y)},
                        mia_sets={"retain": (retain.x, retain.y), "test": (self.test.x, self.test.y),
                                  "forget": (forget.x, forget.y)},
                        seed=self.spec.seed)


METRIC_KEYS = ("forget_acc", "retain_acc", "val_acc", "test_acc", "mia")


def score(u: Mapping[str, float], r: Mapping[str, float]) -> dict:
    """The unlearned model's metrics plus ToW and ToW-MIA against the retrained model's."""
    out = {k: float(u[k]) for k in METRIC_KEYS}
    out["tow"], out["tow_mia"] = tow(u, r), tow_mia(u, r)
    return out


def run_experiment(spec: ExperimentSpec, algorithm: str, params: Mapping[str, Any] | None = None, *,
                   workspace: Optional[Workspace] = None, eval_every_epoch: bool = False,
                   on_epoch: Optional[Callable[[int, dict], None]] = None,
                   log: Callable[[str], None] = lambda s: None,
                   forget_ids: Optional[np.ndarray] = None) -> dict:
    """Run one experiment and return its result record (see README: "The result record").

    `forget_ids` overrides the spec's forget selection (e.g. the union of k sequential requests, forgotten in
    one shot). A diverged run is a result with `diverged` set to its reason, not an exception.
    """
    cfg = make_config(algorithm, params)  # validate before any training
    ws = workspace or Workspace(spec, log=log)
    if forget_ids is None:
        forget_ids = ws.select_forget()  # also before training: a forget set that cannot be drawn trains nothing
    forget_ids = np.sort(np.asarray(forget_ids, dtype=np.int64))
    forget, retain = ws.sets(forget_ids)
    if len(forget) == 0:
        raise ConfigError("the forget set is empty")
    original, _ = ws.original()
    r = ws.retrain_metrics(forget_ids)
    unl = create_unlearner(algorithm, original, forget, retain, cfg, seed=spec.seed,
                           pad=ws.data.crop_pad, flip=ws.data.flip)
    history, diverged, seconds = [], None, 0.0
    try:
        for e in range(cfg.epochs):
            t0 = time.perf_counter()
            stats = unl.step()
            seconds += time.perf_counter() - t0
            row = {"epoch": e + 1, **stats}
            if eval_every_epoch or on_epoch is not None:
                row.update(score(ws.evaluate(unl.model, forget_ids), r))
            history.append(row)
            log(f"  {algorithm} epoch {e + 1}/{cfg.epochs} " + " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))
            if on_epoch is not None:
                on_epoch(e, row)
    except LossDiverged as err:
        diverged = {"reason": err.reason, "epoch": err.epoch, "value": err.value}
        log(f"  diverged: {err}")
    u = ws.evaluate(unl.model, forget_ids)
    rec = score(u, r)
    return {
        **rec,
        "retrain": {k: float(r[k]) for k in METRIC_KEYS},
        "unlearn_seconds": seconds,
        "retrain_seconds": float(r["seconds"]),
        "diverged": diverged,
        "algorithm": algorithm,
        "params": config_dict(cfg),
        "spec": {**dataclasses.asdict(spec), "width": ws.width, "forget_size": len(forget_ids)},
        "forget_ids_sha": artifact_key("forget", ids=np.asarray(forget_ids)),
        "seed": spec.seed,
        "history": history,
        "env": environment(),
    }
