"""The reference models of a workspace, built once and cached by content in its artifact store.

* `original(ws)` — trained on the whole training split, its learning events recorded (the proxies read them);
* `retrain(ws, ids)` — retrained from scratch on train − ids: what unlearning should behave like (ToW's r);
* `reference_metrics(ws, forget_ids, earlier)` — that retrain's accuracies and MIA on the sets of request j
  of a sequence (retrained without F1 ∪ … ∪ Fj, scored on forget = Fj, as RUM's `--unlearn_step`).

Every artifact's key is its kind plus `ws.identity()` plus what else determines it, so a second run, a
resumed search, a prepare task on another node, or the study all find the same file.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .artifacts import artifact_key
from .environment import environment
from .forget import retain_ids
from .training import train
from .workspace import Workspace

EVENT_KEYS = ("confidence", "max_conf", "neg_entropy", "correct")  # what the original's training records
METRIC_KEYS = ("forget_acc", "retain_acc", "val_acc", "test_acc", "mia")        # the report view
SELECTION_KEYS = ("forget_acc", "retain_acc", "val_acc", "sel_mia")               # the selection view


def _train_fresh(ws: Workspace, ids: np.ndarray, *, record_events: bool, what: str) -> dict:
    model = ws.new_model()
    sub = ws.train.subset(ids)
    ws.log(f"training {what}: {ws.spec.arch} on {len(ids)} {ws.spec.dataset} examples, "
           f"{ws.recipe.epochs} epochs ({ws.device})")
    res = train(model, sub, ws.recipe, seed=ws.spec.seed, pad=ws.data.crop_pad, flip=ws.data.flip,
                record_events=record_events, num_ids=len(ws.train),
                on_epoch=lambda e, s: ws.log(f"  {what} epoch {e + 1}/{ws.recipe.epochs} loss {s['loss']:.4f}"))
    out = {"state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
           "seconds": res.seconds, "env": environment()}
    if res.events is not None:
        out["events"] = {k: torch.from_numpy(getattr(res.events, k).copy()) for k in EVENT_KEYS}
    return out


def original(ws: Workspace) -> tuple[torch.nn.Module, dict]:
    """The original model (trained on the whole training split, learning events recorded), cached."""
    key = artifact_key("original", **ws.identity())
    art, built = ws.store.get_or_build(
        "original", key, lambda: _train_fresh(ws, np.arange(len(ws.train)), record_events=True, what="original"))
    if not built:
        ws.log(f"original {ws.spec.arch} seed {ws.spec.seed}: loaded from the store")
    return ws.load_model(art["state"]), art


def retrain(ws: Workspace, forget_ids: np.ndarray) -> tuple[torch.nn.Module, dict]:
    """The model retrained from scratch on train − forget_ids (the ToW reference), cached."""
    forget_ids = np.sort(np.asarray(forget_ids, dtype=np.int64))
    key = artifact_key("retrain", forget=forget_ids, **ws.identity())
    keep = retain_ids(len(ws.train), forget_ids)
    art, built = ws.store.get_or_build(
        "retrain", key, lambda: _train_fresh(ws, keep, record_events=False, what="retrain"))
    if not built:
        ws.log(f"retrain ({len(forget_ids)} forgotten): loaded from the store")
    return ws.load_model(art["state"]), art


def reference_metrics(ws: Workspace, forget_ids: np.ndarray, earlier: Sequence[np.ndarray] = (),
                      view: str = "report") -> dict:
    """Accuracies and MIA of the model retrained without F1 ∪ … ∪ Fj on forget = Fj, cached with its seconds.

    `forget_ids` = Fj, `earlier` = [F1, …, Fj−1] (retain = train − the union). The MIA costs CPU seconds,
    hence the cache. `view` as `Workspace.evaluate` (the selection view never touches the test split).
    """
    forget_ids = np.sort(np.asarray(forget_ids, dtype=np.int64))
    earlier = [e for e in (np.asarray(e, dtype=np.int64).reshape(-1) for e in earlier) if e.size]
    excluded = np.setdiff1d(np.concatenate(earlier), forget_ids) if earlier else None  # sorted, distinct
    union = forget_ids if excluded is None else np.union1d(forget_ids, excluded)
    extra = ({} if excluded is None else {"excluded": excluded}) | ({} if view == "report" else {"view": view})
    key = artifact_key("retrain_metrics", forget=forget_ids, **extra, **ws.identity())

    def build():
        model, art = retrain(ws, union)
        ex = () if excluded is None else (excluded,)
        return {"metrics": ws.evaluate(model, forget_ids, *ex, views=(view,)), "seconds": art["seconds"]}

    art, _ = ws.store.get_or_build("retrain_metrics", key, build)
    return {**art["metrics"], "seconds": float(art["seconds"])}
