"""Memorization proxies: one score per training example, turned into a *memorization level* (high = memorized).

The proxies of the RUM code (`memorization_proxy/`; "the reference" below), named as the `PROXIES` registry names them:

* Learning-event proxies (RUM's `learning_events.py`) — `confidence` (softmax probability of the label),
  `max_conf` (largest probability), `entropy` (negative entropy Σ p log p, from log-softmax so it is finite
  where p underflows to 0, unlike the reference's NaN) and `bin_acc` (1 if the prediction is right; the
  reference's `bi_acc`). Each is the mean over all training epochs of what the original model's own training
  forward passes saw: the events `references.original()` records while it trains, so no extra pass and no
  extra training run (the reference trains a second model from scratch for them). High values mean easy, so
  the memorization level is the value **negated**.
* `holdout` (RUM's `ho_ret`, `heldout_retrain.py`) — fine-tune a copy of the model on held-out data (SGD lr 0.1,
  momentum 0.9, weight decay 5e-4, no shuffling, no augmentation, up to 30 epochs, stop once the epoch's
  summed loss has not improved for 4 epochs) and score each training example by the symmetric KL between
  the model's and the fine-tuned copy's softmax, both in eval mode without augmentation (the reference keeps
  the training transform there). The held-out data are the **validation split**: the reference fine-tunes
  on the test set, which then also measures ToW and the MIA; `holdout_test` does exactly that, for parity.
  High KL means memorized, so the level is the KL itself.

One convention everywhere: `memorization()` returns levels, so low / mid / high mean the same thing for
every proxy and RUM always runs low → mid → high (the reference inverts its retain sets for the learning-
event proxies instead, yet its example script runs them low, mid, high).

**Sequential requests.** The reference re-scores later requests only for `ho_ret`: the hold-out
proxies follow the model they are given (`Proxy.follows_model`): fine-tune the current model instead of the
original. The learning-event proxies do not: for every request they are the **original model's recorded
training events**, whatever model is given — there is no training run of an unlearned model to record, and
the selection restricts the full-length scores to the remaining pool, so requests 2..k rank what remains by
the original's events with no extra pass. Variants that follow the model keep the earlier rule by name:
`confidence_current`, `max_conf_current`, `entropy_current`, `bin_acc_current` — the recorded events for the
original (`model=None`), else the same four quantities from **one eval-mode pass** of the given model over the
training split (no augmentation). An eval-mode snapshot of a model that fits its training data is 1.0 or
near it almost everywhere, so these tie far more (`bin_acc_current` is 0/1).

**True memorization scores from a file** (as RUM loads them): the proxy name `scores:FILE`, FILE a `.npy`, or a
`.npz` whose array `memorization` (Zhao et al.'s CIFAR-10 file), `tr_mem` (Feldman & Zhang's CIFAR-100 file)
or `scores` is used, else its first array. It holds one memorization score (high = memorized) per example of
the dataset's **official** training set in its official order (CIFAR: the 50,000 of the official batches;
digits: all 1,797 bundled digits in scikit-learn's load order, test hold-out included; see
`Dataset.train_source_index`); the training split's ids take their examples' scores. The file does not follow
the model. Its "mid" group is the examples nearest 0.5 (`proxy_center`), as the reference's for true
memorization. A missing file, a wrong length or NaN/inf values are one `ConfigError` line each. The file
must be readable wherever the run runs (a shared path on a cluster); its sha256 is part of the cache key.

Scores are artifacts: keyed by the proxy and its settings, the workspace's base parts (data, arch, width,
recipe, seed) and the model — `"original"`, a caller's provenance key (`model_key`, e.g. "the model after
these requests with this algorithm"), or else a hash of the model's weights; a scores file's by its sha256,
the array used and the data.
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
import re
import time
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from .artifacts import artifact_key
from .batching import DeviceData, make_generator
from .errors import ConfigError, LossDiverged, UnlearnError
from .forget import validate_ids
from .metrics import predict_probs
from .references import original
from .registry import Registry
from .scores_file import from_file, read_scores_file, scores_for_dataset
from .training import ce_step, event_values, sgd
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
    """A memorization proxy. `sign` turns its raw value into a memorization level (−1: high raw = easy).

    `follows_model`: whether scores for a given model describe that model (hold-out proxies, the `_current`
    learning-event variants) or always the original's recorded training events (the learning-event proxies).
    """

    name: str
    description: str
    sign: int
    event: Optional[str] = None     # learning-event proxies: the recorded event (EVENT_KEYS)
    heldout: Optional[str] = None   # hold-out proxies: "val" or "test"
    holdout: HoldoutConfig = HoldoutConfig()
    follows_model: bool = True

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


_EVENT_PROXIES = (("confidence", "confidence", "mean softmax probability of the label"),
                  ("max_conf", "max_conf", "mean largest softmax probability"),
                  ("entropy", "neg_entropy", "mean negative entropy Σ p log p (negated, i.e. mean entropy)"),
                  ("bin_acc", "correct", "mean 0/1 correctness"))
for _name, _event, _what in _EVENT_PROXIES:
    _register(Proxy(_name, f"{_what} during the original's training (negated); every request", -1, event=_event,
                    follows_model=False))
    _register(Proxy(f"{_name}_current", f"{_what} (negated): the original's training events for request 1, then "
                                        "one eval-mode pass of the current model", -1, event=_event))
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


def log_probs(model: nn.Module, data: DeviceData) -> torch.Tensor:
    """Log-softmax outputs (N×C float32) on `data` in eval mode, in its numerics: finite where p underflows to 0
    (entropies, KLs)."""
    return predict_probs(model, data.x, log=True, numerics=data.numerics)


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
            _, loss = ce_step(ft, opt, x, y, data.numerics)
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
    vals = event_values(log_probs(model, ws.train), ws.train.y)
    return vals[proxy.event].double().cpu().numpy()


def _raw_holdout(ws: Workspace, proxy: Proxy, model: nn.Module) -> tuple[np.ndarray, int]:
    data = {"val": ws.val, "test": ws.test}[proxy.heldout]
    cfg = proxy.holdout
    ft, epochs = holdout_finetune(model, data, cfg, batch_size=cfg.batch_size or ws.recipe.batch_size,
                                  seed=ws.spec.seed)
    kl = symmetric_kl(log_probs(model, ws.train), log_probs(ft, ws.train))
    return kl.double().cpu().numpy(), epochs


EVENTS_SOURCE = "recorded training events"  # the original's (info "model": "original")
PASS_SOURCE = "one eval-mode pass of the current model"


def memorization(ws: Workspace, proxy: str, model: Optional[nn.Module] = None, pool=None, *,
                 model_key: Optional[str] = None, return_info: bool = False):
    """Memorization level of every training example by `proxy` (high = memorized), cached in the store.

    Args:
        ws: the workspace (data, store, original model).
        proxy: a `PROXIES` name or `scores:FILE` (see the module docstring).
        model: None → the workspace's original model. A model → scores of that model where the proxy follows
            the model (`Proxy.follows_model`: hold-out proxies fine-tune it, the `_current` learning-event
            variants make one eval-mode pass); the learning-event proxies and scores files ignore it and
            give what they give for the original (its recorded training events, no extra pass; the file).
        pool: optional ids; validated (distinct, in range). The result is always full-length, so ranks
            within any pool are comparable and one cached artifact serves every pool.
        model_key: identity of `model` for the cache (e.g. its provenance); default: a hash of its weights.
        return_info: also return {"proxy", "model", "source", "built", "seconds", ...}: `model` is what the
            scores describe ("original", the model's key, or "file"), `source` how they were obtained.

    Returns:
        float64 array of len(ws.train) finite scores (a writable copy), or (scores, info).

    Raises:
        ConfigError: unknown proxy, bad scores file or bad pool. UnlearnError: the model's outputs are not finite.
    """
    n = len(ws.train)
    if pool is not None:
        validate_ids(pool, n)
    path = check_proxy_name(proxy)
    if path is not None:
        return from_file(ws, proxy, path, return_info)
    p = PROXIES.get(proxy)
    if not p.follows_model:
        model = None  # the original's recorded events describe every request (module docstring)
    source = "original" if model is None else (model_key or f"weights:{weights_sha(model)}")
    key = artifact_key("proxy", proxy=p.name, settings=p.settings(), model=source, **ws.identity())
    if p.event is not None:
        how = EVENTS_SOURCE if model is None else PASS_SOURCE
    else:
        how = f"hold-out fine-tuning of the {'original' if model is None else 'given'} model on {p.heldout}"

    def build() -> dict:
        t0 = time.perf_counter()
        extra: dict = {}
        if p.event is not None and model is None:
            raw = _raw_from_events(ws, p)
        elif p.event is not None:
            raw = _raw_from_pass(ws, p, model)
        else:
            m = model if model is not None else original(ws)[0]
            ws.log(f"proxy {p.name}: hold-out fine-tuning on the {p.heldout} split ({source})")
            raw, extra["holdout_epochs"] = _raw_holdout(ws, p, m)
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
    info = {"proxy": p.name, "model": source, "source": how, "follows_model": p.follows_model, "built": built,
            "seconds": float(art["seconds"]) if built else 0.0,
            **({"holdout_epochs": int(art["holdout_epochs"])} if "holdout_epochs" in art else {})}
    return scores, info


# ----------------------------------------------------------------------------------- scores from a file

SCORES_PREFIX = "scores:"
SCORES_CENTER = 0.5  # "mid" of true memorization scores (the reference's); proxies use the pool's median


def check_proxy_name(name) -> Optional[str]:
    """Check a proxy name without reading anything: a `PROXIES` name (→ None) or `scores:FILE` (→ FILE)."""
    if not isinstance(name, str):
        raise ConfigError(f"a proxy is a name ({', '.join(PROXIES.names())}) or scores:FILE, got {name!r}")
    if name.startswith(SCORES_PREFIX):
        path = name[len(SCORES_PREFIX):]
        if not path.strip():
            raise ConfigError("proxy scores:FILE needs a file, e.g. scores:cifar10_memorization.npz")
        return path
    PROXIES.get(name)
    return None


def check_proxy(name, data=None) -> None:
    """A valid proxy: a `PROXIES` name, or `scores:FILE` whose file exists and holds finite scores — and,
    given the `data.Dataset`, one per example of its official training set. One ConfigError line otherwise."""
    path = check_proxy_name(name)
    if path is not None:
        arr, _, _ = read_scores_file(path)
        if data is not None:
            scores_for_dataset(arr, path, data)


def absolute_proxy(name: str) -> str:
    """`name`, with a scores file's path made absolute (Ray workers and trials run in other folders)."""
    if isinstance(name, str) and name.startswith(SCORES_PREFIX):
        return SCORES_PREFIX + os.path.abspath(os.path.expanduser(name[len(SCORES_PREFIX):]))
    return name


def follows_model(name: str) -> bool:
    """Whether `name`'s scores depend on the model they are asked for (hold-out and `*_current` proxies); the
    learning-event proxies and scores files give the original's whatever the model."""
    return check_proxy_name(name) is None and PROXIES.get(name).follows_model


def proxy_center(name: str) -> Optional[float]:
    """Where a mix's "mid" group is centred: 0.5 for a scores file (true memorization), else None (the median)."""
    return SCORES_CENTER if isinstance(name, str) and name.startswith(SCORES_PREFIX) else None


def proxy_label(name: str) -> str:
    """A file-name-safe label of a proxy: its name, or for scores:FILE `scores-<file stem>-<hash of the path>`."""
    if not name.startswith(SCORES_PREFIX):
        return name
    path = name[len(SCORES_PREFIX):]
    stem = re.sub(r"[^A-Za-z0-9_.]+", "_", os.path.splitext(os.path.basename(path))[0]) or "file"
    return f"scores-{stem}-{hashlib.sha256(path.encode()).hexdigest()[:6]}"
