"""What every unlearning algorithm shares: the registry, the epoch loop, checkpoints and the divergence guard.

An algorithm is a frozen config dataclass (its fields are the hyperparameters, named as in the paper) plus an
`Unlearner` subclass that implements `run_epoch(epoch)`. The tuner drives unlearners one epoch at a time and
checkpoints them with `state_dict()`, so a retried trial resumes exactly where it stopped.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .batching import DeviceData, make_generator
from .errors import ConfigError, LossDiverged
from .registry import Registry
from .training import autocast, sgd

ALGORITHMS: Registry[type["Unlearner"]] = Registry("algorithm")

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
        self.gen_retain = make_generator(seed, self.device)
        self.gen_forget = make_generator(seed + 1, self.device)
        self.opt = sgd(model, cfg.lr, cfg.momentum, cfg.weight_decay)
        self.epoch = 0  # epochs completed

    @property
    def epochs(self) -> int:
        return self.cfg.epochs

    def run_epoch(self, epoch: int) -> dict:
        raise NotImplementedError

    def step(self) -> dict:
        """Run the next epoch; returns its stats (mean losses)."""
        stats = self.run_epoch(self.epoch)
        self.epoch += 1
        return stats

    def run(self, on_epoch: Optional[Callable[[int, dict], None]] = None) -> nn.Module:
        while self.epoch < self.epochs:
            stats = self.step()
            if on_epoch is not None:
                on_epoch(self.epoch - 1, stats)
        return self.model

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
        with autocast(self.device):
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


def make_config(algorithm: str, params: Mapping[str, Any] | None = None):
    """The algorithm's config from `params` (unknown names raise ConfigError listing the valid ones)."""
    cls = ALGORITHMS.get(algorithm).Config
    fields = {f.name: f for f in dataclasses.fields(cls)}
    params = dict(params or {})
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ConfigError(f"unknown hyperparameter(s) {', '.join(unknown)} for {algorithm}; "
                          f"valid: {', '.join(fields)}")
    return cls(**{k: _coerce(fields[k], v) for k, v in params.items()})


def config_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def create_unlearner(algorithm: str, model: nn.Module, forget: DeviceData, retain: DeviceData, cfg, *, seed: int,
                     pad: int = 0, flip: bool = False) -> Unlearner:
    return ALGORITHMS.get(algorithm)(model, forget, retain, cfg, seed=seed, pad=pad, flip=flip)


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {name}={value}")
