"""What every unlearning algorithm shares: the registry, the epoch loop, checkpoints and the divergence guard.

An unlearning epoch is `Unlearner.next_epoch()`; the run driver (`run.py`) creates unlearners per deletion
request through `for_request`, so a new algorithm is one file with a config and an `Unlearner` subclass plus
`@ALGORITHMS.register(name)`, and its module's name in `ALGORITHM_MODULES` (the registration list). It is
then known to the CLIs, the run driver, checkpoints and RUM's stages (every registered `Unlearner` is a stage
choice); a search space in `search_spaces/` makes it searchable by the tuner and the study.

An algorithm is a frozen config dataclass (its fields are the hyperparameters, named as in the paper) plus an
`Unlearner` subclass that implements `run_epoch(epoch)`. The tuner drives unlearners one epoch at a time and
checkpoints them with `state_dict()`, so a retried trial resumes exactly where it stopped.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Any, Callable, Mapping, Optional

import numpy as np

import torch
import torch.nn as nn
import torch.nn.functional as F

from .batching import DeviceData, make_generator
from .errors import ConfigError, LossDiverged
from .registry import Registry
from .training import sgd

# The registration, timm style: the modules of the algorithms, each of which registers its algorithm at its
# definition (`@ALGORITHMS.register`). The one list of them: every user of ALGORITHMS (CLIs, run driver, RUM's
# stages, checkpoints) sees every algorithm named here.
ALGORITHM_MODULES = ("finetune", "l1_sparse", "neggrad", "neggrad_plus", "random_label", "rum", "salun", "scrub")


class AlgorithmRegistry(Registry):
    """The algorithm `Registry`, which imports `ALGORITHM_MODULES` before its first lookup.

    At lookup time, not when this module is imported: an algorithm module imports this one (and may import
    another algorithm, as SalUn builds on Random Label), so importing them all from here at import time would
    find some of them half-initialized.
    """

    def __init__(self, kind: str, modules: tuple[str, ...]):
        super().__init__(kind)
        self._modules, self._loaded = modules, False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for m in self._modules:
                importlib.import_module(f"{__package__}.{m}")

    def get(self, name: str):
        self._load()
        return super().get(name)

    def names(self) -> list[str]:
        self._load()
        return super().names()

    def __contains__(self, name: str) -> bool:
        self._load()
        return super().__contains__(name)


ALGORITHMS: AlgorithmRegistry = AlgorithmRegistry("algorithm", ALGORITHM_MODULES)

GUARD_EVERY = 16  # steps between divergence checks: one host sync per 16 steps keeps the loop async


class Unlearner:
    """Base class: owns the model being unlearned, its SGD optimizer and the run's seeded generators.

    Subclasses set `Config` and implement `run_epoch`. The retain and forget streams have generators of their
    own (seed and seed+1), so adding or removing forget passes never changes the retain order — which makes
    degenerate settings (SCRUB α=0, γ=1, no max steps; NegGrad+ β=1) exactly plain fine-tuning.
    """

    Config: type
    # |forget term| or |loss| above this means the run has exploded (a sane CE is ~ln C ≈ 2–5; the paper's
    # β = 0.2 NegGrad+ run heads to -1e17 within two epochs).
    diverge_bound: float = 1e3

    def __init__(self, model: nn.Module, forget: DeviceData, retain: DeviceData, cfg, *, seed: int,
                 pad: int = 0, flip: bool = False):
        if len(retain) == 0:
            raise ConfigError("the retain set is empty: nothing to keep the model's utility with")
        self.model, self.forget, self.retain, self.cfg = model, forget, retain, cfg
        self.pad, self.flip = (pad, flip) if getattr(cfg, "augment", False) else (0, False)
        self.device = retain.x.device
        self.numerics = retain.numerics  # precision and memory format of every forward pass (the sets' own)
        self.gen_retain = make_generator(seed, self.device)
        self.gen_forget = make_generator(seed + 1, self.device)
        self.opt = sgd(model, cfg.lr, cfg.momentum, cfg.weight_decay)
        self.epoch = 0  # epochs completed

    @property
    def epochs(self) -> int:
        return self.cfg.epochs

    def run_epoch(self, epoch: int) -> dict:
        raise NotImplementedError

    @property
    def settled(self) -> bool:
        """Whether the metrics after this epoch are comparable with another configuration's at the same share
        of its schedule (early stopping reads only such epochs); SCRUB is not during its max phase."""
        return True

    def next_epoch(self) -> dict:
        """Run the next unlearning epoch; returns its stats (mean losses)."""
        stats = self.run_epoch(self.epoch)
        self.epoch += 1
        return stats

    def run(self, on_epoch: Optional[Callable[[int, dict], None]] = None) -> nn.Module:
        while self.epoch < self.epochs:
            stats = self.next_epoch()
            if on_epoch is not None:
                on_epoch(self.epoch - 1, stats)
        return self.model

    # --- how the run driver creates and reads an unlearner ---------------------------------------------------
    @classmethod
    def proxies(cls, cfg) -> tuple[str, ...]:
        """Memorization proxies this algorithm needs scores of for each request (RUM: its own)."""
        return ()

    @classmethod
    def bind(cls, cfg, spec):
        """`cfg` completed from the experiment's spec where it defers to it (RUM: the proxy)."""
        return cfg

    @classmethod
    def for_request(cls, model: nn.Module, request: "Request", cfg) -> "Unlearner":
        """The unlearner of one deletion request: forget = its ids, retain = train − them − earlier requests."""
        forget, retain = request.ws.sets(request.forget_ids, *request.earlier)
        return cls(model, forget, retain, cfg, seed=request.seed, pad=request.ws.data.crop_pad,
                   flip=request.ws.data.flip)

    def finish(self) -> dict:
        """Called once the request's epochs are done (or it diverged): extra fields of the request's record."""
        return {}

    # --- shared pieces -----------------------------------------------------------------------------------
    def sgd_step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def retain_batches(self, batch_size: int):
        return self.retain.batches(batch_size, self.gen_retain, pad=self.pad, flip=self.flip)

    def forget_batches(self, batch_size: int):
        return self.forget.batches(batch_size, self.gen_forget, pad=self.pad, flip=self.flip)

    def forward_ce(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.numerics.autocast():
            logits = self.model(x)
        return F.cross_entropy(logits.float(), y)

    def guard(self, worst: torch.Tensor, step: int, epoch: int, what: str, *, force: bool = False) -> None:
        """Raise LossDiverged if the running worst |value| is non-finite or past the bound (sync every N steps)."""
        if not force and step % GUARD_EVERY:
            return
        v = worst.item()
        if not math.isfinite(v):
            raise LossDiverged(f"{what} is not finite", epoch, v)
        if v > self.diverge_bound:
            raise LossDiverged(f"|{what}| exceeded {self.diverge_bound:g}", epoch, v)

    # --- checkpoints ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "epoch": self.epoch,
                "gen_retain": self.gen_retain.get_state(), "gen_forget": self.gen_forget.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.gen_retain.set_state(state["gen_retain"].cpu())
        self.gen_forget.set_state(state["gen_forget"].cpu())


def _coerce(field: dataclasses.Field, value: Any) -> Any:
    """CLI strings → the field's type (int/float/bool); other values pass through."""
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    if isinstance(value, str):
        try:
            if kind == "int":
                return int(value)
            if kind == "float":
                return float(value)
            if kind == "bool":
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
        except ValueError:
            raise ConfigError(f"{field.name} must be a {kind}, got {value!r}") from None
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def check_config_types(cfg, what: str) -> None:
    """Values of the right type: an int field must get an int (2.5 epochs would fail mid-run), no bools."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        ok = {"int": isinstance(v, (int, np.integer)) and not isinstance(v, bool),
              "float": isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool),
              "bool": isinstance(v, (bool, np.bool_))}.get(kind, True)
        if not ok:
            noun = {"int": "an integer", "float": "a number", "bool": "a boolean"}[kind]
            raise ConfigError(f"{what}: {f.name} must be {noun}, got {v!r}")


def make_config(algorithm: str, params: Mapping[str, Any] | None = None):
    """The algorithm's validated config from `params`: the one place hyperparameters are checked.

    Unknown names, values of the wrong type and out-of-range values raise ConfigError saying what came in and
    what is valid. Strings (from a CLI) are converted to the field's type.
    """
    cls = ALGORITHMS.get(algorithm).Config
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if params is not None and not isinstance(params, Mapping):
        raise ConfigError(f"{algorithm}: params must be a mapping, got {params!r}")
    params = dict(params or {})
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ConfigError(f"unknown hyperparameter(s) {', '.join(map(str, unknown))} for {algorithm}; "
                          f"valid: {', '.join(fields)}")
    try:
        cfg = cls(**{k: _coerce(fields[k], v) for k, v in params.items()})
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # e.g. lr=None compared with 0 in the config's checks
        raise ConfigError(f"{algorithm}: bad value: {e}") from None
    check_config_types(cfg, algorithm)
    return cfg


def config_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


@dataclasses.dataclass
class Request:
    """One deletion request as an unlearner is given it (built by the run driver, `run.py`)."""

    ws: Any                                   # the Workspace
    forget_ids: np.ndarray                    # this request's forget set, sorted ids
    earlier: list                             # forget sets of the earlier requests (kept out of retain)
    seed: int                                 # the request's seed (run seed + request index)
    scores: dict = dataclasses.field(default_factory=dict)  # proxy name → memorization levels
    groups: Optional[tuple] = None            # (low, mid, high) when the request was selected as a mix
    group_proxy: Optional[str] = None         # the proxy those groups were ranked by


def create_unlearner(algorithm: str, model: nn.Module, forget: DeviceData, retain: DeviceData, cfg, *, seed: int,
                     pad: int = 0, flip: bool = False) -> Unlearner:
    return ALGORITHMS.get(algorithm)(model, forget, retain, cfg, seed=seed, pad=pad, flip=flip)


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {name}={value}")

