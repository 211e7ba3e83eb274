"""`Workspace`: one experiment's data on the device, its numerics, its artifact store and its training recipe.

A workspace is what every run on one (dataset, arch, width, seed) shares. It knows how to make a fresh model,
which examples a forget set leaves to retain, and how to evaluate a model on those sets. Building and caching
the original and retrained models is `references.py`; choosing forget sets is `forget.py`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional

import numpy as np
import torch

from .artifacts import ArtifactStore
from .batching import DeviceData
from .data import Dataset, load_dataset
from .errors import ConfigError
from .forget import retain_ids, validate_ids
from .metrics import evaluate
from .models import create_model
from .numerics import Numerics
from .spec import ExperimentSpec, default_store
from .training import TrainConfig, pick_device, prepare_model, recipe_for

VIEWS = ("report", "selection")  # report: the paper's test-set metrics; selection: validation only (searches)


def check_views(views) -> tuple[str, ...]:
    """`views` as a tuple, if it names one or both of `VIEWS`."""
    views = tuple(views)
    if not views or any(v not in VIEWS for v in views):
        raise ConfigError(f"views must be some of {', '.join(VIEWS)}, got {views!r}")
    return views


# The spec fields a workspace is built from (the forget fields may differ between runs on one workspace).
WORKSPACE_FIELDS = ("dataset", "arch", "seed", "split_seed", "train_epochs")


class Workspace:
    """Data on the device + artifact store + recipe for one ExperimentSpec."""

    def __init__(self, spec: ExperimentSpec, dataset: Optional[Dataset] = None, *,
                 log: Callable[[str], None] = lambda s: None):
        self.spec, self.log = spec, log
        self.data = dataset if dataset is not None else load_dataset(spec.dataset, spec.data_dir, spec.split_seed)
        self.device = pick_device(spec.device)
        # Precision and memory format, resolved here once: every set, model and evaluation of the workspace uses it.
        self.numerics = Numerics.resolve(self.device, spec.precision, spec.memory_format)
        d, n = self.data, self.numerics
        self.train = DeviceData.from_arrays(d.train.x, d.train.y, self.device, numerics=n)
        self.val = DeviceData.from_arrays(d.val.x, d.val.y, self.device, numerics=n)
        self.test = DeviceData.from_arrays(d.test.x, d.test.y, self.device, numerics=n)
        self.store = ArtifactStore(spec.store or default_store())
        self.recipe: TrainConfig = recipe_for(spec.dataset, epochs=spec.train_epochs)
        self.width = spec.resolved_width

    def identity(self) -> dict:
        """What determines every model trained here (part of each artifact's key): a bf16 original is not an fp32
        one. The memory format is not part of it: it changes only how the same sums are laid out."""
        return {"data": self.data.fingerprint(), "arch": self.spec.arch, "width": self.width,
                "recipe": dataclasses.asdict(self.recipe), "seed": self.spec.seed,
                "precision": self.numerics.precision}

    def check_spec(self, spec: ExperimentSpec) -> None:
        """A run's spec must be this workspace's: same data, model, seed and recipe (forget fields may differ)."""
        diff = [(f, getattr(self.spec, f), getattr(spec, f)) for f in WORKSPACE_FIELDS
                if getattr(spec, f) != getattr(self.spec, f)]
        if spec.resolved_width != self.width:
            diff.append(("width", self.width, spec.resolved_width))
        theirs = Numerics.resolve(self.device, spec.precision, spec.memory_format)
        diff += [(f, getattr(self.numerics, f), getattr(theirs, f)) for f in ("precision", "memory_format")
                 if getattr(theirs, f) != getattr(self.numerics, f)]
        if diff:
            raise ConfigError("the workspace was built for another experiment: "
                              + ", ".join(f"{f}={a!r} there, {b!r} in the spec" for f, a, b in diff))

    def new_model(self) -> torch.nn.Module:
        torch.manual_seed(self.spec.seed)  # initial weights are part of what `seed` fixes
        d = self.data
        m = create_model(self.spec.arch, d.num_classes, in_chans=d.in_chans, width=self.width, mean=d.mean, std=d.std)
        return prepare_model(m, self.device, self.numerics)

    def load_model(self, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        m = self.new_model()
        m.load_state_dict(state)
        return m

    def sets(self, forget_ids: np.ndarray, *exclude: np.ndarray) -> tuple[DeviceData, DeviceData]:
        """(forget, retain) on the device; retain = train − forget − every set in `exclude`."""
        validate_ids(forget_ids, len(self.train))
        keep = retain_ids(len(self.train), forget_ids, *exclude)
        if len(keep) == 0:
            raise ConfigError("the retain set is empty: the forget set covers the whole training split")
        return self.train.subset(forget_ids), self.train.subset(keep)

    def evaluate(self, model: torch.nn.Module, forget_ids: np.ndarray, *exclude: np.ndarray,
                 mia: bool = True, views: tuple[str, ...] = ("report",)) -> dict:
        """Metrics of `model` for these sets in one or both views (see `VIEWS`), each image set predicted once.

        * `report` — the paper's definitions: forget/retain/val/test accuracy (%) and `mia`, the SVC MIA with
          the test set as non-members and an equally sized seeded retain sample as members.
        * `selection` — what a search may read: forget/retain/val accuracy and `sel_mia`, the same attack with
          the validation split as non-members (and a validation-sized retain sample). The test split is not
          touched unless the report view is asked for too.
        """
        views = check_views(views)
        forget, retain = self.sets(forget_ids, *exclude)
        cache: dict = {}  # predictions shared by the views: forget, retain and val are the same images
        out: dict = {}
        for view in views:
            held = self.test if view == "report" else self.val
            splits = {"forget": (forget.x, forget.y), "retain": (retain.x, retain.y), "val": (self.val.x, self.val.y)}
            if view == "report":
                splits["test"] = (self.test.x, self.test.y)
            got = evaluate(model, splits, seed=self.spec.seed, cache=cache, numerics=self.numerics,
                           mia_sets={"retain": (retain.x, retain.y), "test": (held.x, held.y),  # "test": non-members
                                     "forget": (forget.x, forget.y)} if mia else None)
            if view == "selection":
                got = {k: v for k, v in got.items() if not k.startswith("mia")} | (
                    {"sel_mia": got["mia"]} if mia else {})
            out.update(got)
        return out
