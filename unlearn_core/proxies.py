"""Memorization proxies: one score per training example, turned into a *memorization level* (high = memorized).

The proxies of reference/algorithms.md §5, named as the `PROXIES` registry names them:

* Learning-event proxies (§5.1) — `confidence` (softmax probability of the label), `max_conf` (largest
  probability), `entropy` (negative entropy Σ p log p, from log-softmax so it is finite where p underflows to
  0, unlike the reference's NaN) and `bin_acc` (1 if the prediction is right; the reference's `bi_acc`).
  Each is the mean over all training epochs of what the original model's own training forward passes saw:
  the events `references.original()` records while it trains, so no extra pass and no extra training run
  (the reference trains a second model from scratch for them). High values mean easy, so the memorization
  level is the value **negated**.
* `holdout` (§5.2, the reference's `ho_ret`) — fine-tune a copy of the model on held-out data (SGD lr 0.1,
  momentum 0.9, weight decay 5e-4, no shuffling, no augmentation, up to 30 epochs, stop once the epoch's
  summed loss has not improved for 4 epochs) and score each training example by the symmetric KL between
  the model's and the fine-tuned copy's softmax, both in eval mode without augmentation (the reference keeps
  the training transform there). The held-out data are the **validation split**: the reference fine-tunes
  on the test set, which then also measures ToW and the MIA; `holdout_test` does exactly that, for parity.
  High KL means memorized, so the level is the KL itself.

One convention everywhere: `memorization()` returns levels, so low / mid / high mean the same thing for
every proxy and RUM always runs low → mid → high (the reference inverts its retain sets for the learning-
event proxies instead, §3.4 and §10.5).

**Sequential requests (§3.5).** From the second request on, the proxy must describe the *current* model.
The reference does that only for `holdout`, which is easy: fine-tune the current model instead of the
original. Learning-event proxies have no training run for an unlearned model, so for a given `model` they
are the natural extension: the same four quantities from **one eval-mode pass** of that model over the
training split (no augmentation). The first request (`model=None`) uses the recorded events, as the
reference does. The two are not interchangeable — means over training epochs in train mode vs one
eval-mode snapshot — so their ranks, not their values, are what carries over.

Scores are artifacts: keyed by the proxy and its settings, the workspace's base parts (data, arch, width,
recipe, seed) and the model — `"original"`, a caller's provenance key (`model_key`, e.g. "the model after
these requests with this algorithm"), or else a hash of the model's weights.
"""
from __future__ import annotations

import copy
import hashlib
import math
import time
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .artifacts import artifact_key
from .batching import DeviceData, make_generator
from .errors import LossDiverged, UnlearnError
from .forget import validate_ids
from .metrics import predict_probs
from .references import EVENT_KEYS, original
from .registry import Registry
from .training import ce_step, sgd
from .workspace import Workspace


@dataclass(frozen=True)
class HoldoutConfig:
    """Hold-out retraining (RUM:memorization_proxy/heldout_retrain.py defaults)."""

    lr: float = 0.1            # --ft_lr
    max_epochs: int = 30       # --ft_epochs
    patience: int = 4          # stop after this many epochs without a lower summed loss
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: Optional[int] = None  # None → the workspace recipe's batch size (RUM: --batch_size)


@dataclass(frozen=True)
class Proxy:
    """A memorization proxy. `sign` turns its raw value into a memorization level (−1: high raw = easy)."""

    name: str
    description: str
    sign: int
    event: Optional[str] = None     # learning-event proxies: the recorded event (EVENT_KEYS)
    heldout: Optional[str] = None   # hold-out proxies: "val" or "test"
    holdout: HoldoutConfig = HoldoutConfig()

    @property
    def kind(self) -> str:
        return "events" if self.event is not None else "holdout"

    def settings(self) -> dict:
        """What determines the scores besides the model (part of the artifact key)."""
        if self.event is not None:
            return {"event": self.event, "sign": self.sign}
        return {"heldout": self.heldout, "sign": self.sign, **asdict(self.holdout)}


PROXIES: Registry[Proxy] = Registry("proxy")


def _register(p: Proxy) -> Proxy:
    return PROXIES.register(p.name)(p)


_register(Proxy("confidence", "mean softmax probability of the label during training (negated)", -1,
                event="confidence"))
_register(Proxy("max_conf", "mean largest softmax probability during training (negated)", -1, event="max_conf"))
_register(Proxy("entropy", "mean negative entropy Σ p log p during training (negated, i.e. mean entropy)", -1,
                event="neg_entropy"))
_register(Proxy("bin_acc", "mean 0/1 correctness during training (negated)", -1, event="correct"))
_register(Proxy("holdout", "symmetric KL to a copy fine-tuned on the validation split", +1, heldout="val"))
_register(Proxy("holdout_test", "symmetric KL to a copy fine-tuned on the test set (reference parity)", +1,
                heldout="test"))


# ------------------------------------------------------------------------------------------- computation

def weights_sha(model: nn.Module) -> str:
    """Short sha256 of a model's state (parameters and buffers, by name): identifies a model by content."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def log_probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Log-softmax outputs (N×C float32) in eval mode: finite where p underflows to 0 (entropies, KLs)."""
    return predict_probs(model, x, log=True)


def event_values(logp: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four learning-event quantities of one pass (same formulas as training's event recorder)."""
    p = logp.exp()
    return {"confidence": p.gather(1, y[:, None]).squeeze(1),
            "max_conf": p.max(1).values,
            "neg_entropy": (p * logp).sum(1),
            "correct": (logp.argmax(1) == y).float()}


def symmetric_kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """½·[KL(p‖q) + KL(q‖p)] per row = ½·Σ (p − q)(log p − log q): finite for finite log-probabilities."""
    return 0.5 * ((logp.exp() - logq.exp()) * (logp - logq)).sum(1)


def holdout_finetune(model: nn.Module, data: DeviceData, cfg: HoldoutConfig, *, batch_size: int,
                     seed: int = 0) -> tuple[nn.Module, int]:
    """A copy of `model` fine-tuned on `data` as hold-out retraining does; returns (copy, epochs run).

    Batches in data order (the reference's loader does not shuffle) without augmentation, train mode,
    constant lr. Early stop once the epoch's summed batch loss has not improved for `patience` epochs.
    """
    ft = copy.deepcopy(model)
    ft.train()
    device = data.x.device
    opt = sgd(ft, cfg.lr, cfg.momentum, cfg.weight_decay)
    gen = make_generator(seed, device)  # unused without shuffling/augmentation; batches() wants one
    best, stale, epochs = math.inf, 0, 0
    for epoch in range(cfg.max_epochs):
        total = torch.zeros((), device=device)
        for x, y, _ in data.batches(batch_size, gen, shuffle=False):
            _, loss = ce_step(ft, opt, x, y)
            total += loss.detach()
        epochs = epoch + 1
        v = total.item()
        if not math.isfinite(v):
            raise LossDiverged("hold-out fine-tuning loss is not finite", epoch, v)
        if v < best:
            best, stale = v, 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    return ft, epochs


def _raw_from_events(ws: Workspace, proxy: Proxy) -> np.ndarray:
    _, art = original(ws)
    events = art.get("events")
    if events is None or proxy.event not in events:
        raise UnlearnError(f"the original model's artifact has no recorded {proxy.event!r} events")
    return events[proxy.event].double().numpy()


def _raw_from_pass(ws: Workspace, proxy: Proxy, model: nn.Module) -> np.ndarray:
    vals = event_values(log_probs(model, ws.train.x), ws.train.y)
    return vals[proxy.event].double().cpu().numpy()


def _raw_holdout(ws: Workspace, proxy: Proxy, model: nn.Module) -> tuple[np.ndarray, int]:
    data = {"val": ws.val, "test": ws.test}[proxy.heldout]
    cfg = proxy.holdout
    ft, epochs = holdout_finetune(model, data, cfg, batch_size=cfg.batch_size or ws.recipe.batch_size,
                                  seed=ws.spec.seed)
    kl = symmetric_kl(log_probs(model, ws.train.x), log_probs(ft, ws.train.x))
    return kl.double().cpu().numpy(), epochs


def memorization(ws: Workspace, proxy: str, model: Optional[nn.Module] = None, pool=None, *,
                 model_key: Optional[str] = None, return_info: bool = False):
    """Memorization level of every training example by `proxy` (high = memorized), cached in the store.

    Args:
        ws: the workspace (data, store, original model).
        proxy: a `PROXIES` name.
        model: None → the workspace's original model; learning-event proxies then come from the events
            recorded while it trained (no extra pass). A model → scores of that model (learning-event
            proxies from one eval-mode pass; see the module docstring).
        pool: optional ids; validated (distinct, in range). The result is always full-length, so ranks
            within any pool are comparable and one cached artifact serves every pool.
        model_key: identity of `model` for the cache (e.g. its provenance); default: a hash of its weights.
        return_info: also return {"proxy", "source", "built", "seconds", ...}.

    Returns:
        float64 array of len(ws.train) finite scores (a writable copy), or (scores, info).

    Raises:
        ConfigError: unknown proxy or bad pool. UnlearnError: the model's outputs are not finite.
    """
    p = PROXIES.get(proxy)
    n = len(ws.train)
    if pool is not None:
        validate_ids(pool, n)
    source = "original" if model is None else (model_key or f"weights:{weights_sha(model)}")
    key = artifact_key("proxy", proxy=p.name, settings=p.settings(), model=source, **ws.identity())

    def build() -> dict:
        t0 = time.perf_counter()
        extra: dict = {}
        if p.event is not None and model is None:
            raw, how = _raw_from_events(ws, p), "recorded training events"
        elif p.event is not None:
            raw, how = _raw_from_pass(ws, p, model), "one eval-mode pass of the current model"
        else:
            m = model if model is not None else original(ws)[0]
            ws.log(f"proxy {p.name}: hold-out fine-tuning on the {p.heldout} split ({source})")
            raw, extra["holdout_epochs"] = _raw_holdout(ws, p, m)
            how = f"hold-out fine-tuning on {p.heldout}"
        scores = p.sign * raw
        if scores.shape != (n,) or not np.isfinite(scores).all():
            bad = int((~np.isfinite(scores)).sum()) if scores.shape == (n,) else scores.shape
            raise UnlearnError(f"proxy {p.name}: {bad} non-finite scores (does the model output NaN/inf?)")
        return {"scores": torch.from_numpy(scores), "seconds": time.perf_counter() - t0, "proxy": p.name,
                "source": how, **extra}

    art, built = ws.store.get_or_build("proxy", key, build)
    scores = art["scores"].numpy().astype(np.float64, copy=True)
    if not return_info:
        return scores
    info = {"proxy": p.name, "model": source, "source": art["source"], "built": built,
            "seconds": float(art["seconds"]) if built else 0.0,
            **({"holdout_epochs": int(art["holdout_epochs"])} if "holdout_epochs" in art else {})}
    return scores, info
