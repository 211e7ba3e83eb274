"""Figures of a search or a study, written as PNG with matplotlib (headless: the Agg backend).

Every figure has labelled axes, a legend and a title naming dataset / arch / metric, like the paper's
Figures 4.1–4.7 (ToW, ToW-MIA and accuracies over sequential requests with 95 % interval bars).
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on cluster heads and CI machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from unlearn_core.metrics import mean_ci  # noqa: E402

DPI = 120


def save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _ci_rows(values_by_step: Sequence[Sequence[float]]):
    """Per step: (mean, half-width of the 95 % interval) over the seeds actually run."""
    means, errs = [], []
    for vals in values_by_step:
        vals = [v for v in vals if v is not None and math.isfinite(v)]
        if not vals:
            means.append(np.nan), errs.append(0.0)
            continue
        m, lo, hi = mean_ci(vals)
        means.append(m), errs.append(hi - m)
    return np.array(means), np.array(errs)


def per_step(curves: dict, *, metric: str, title: str, ylabel: str, path: str, reference: dict | None = None) -> str:
    """One line per method over requests 1..k with 95 % interval bars; `reference` (dashed) e.g. the retrain."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, by_step in curves.items():
        m, e = _ci_rows(by_step)
        ax.errorbar(np.arange(1, len(m) + 1), m, yerr=e, marker="o", capsize=3, label=label)
    for label, by_step in (reference or {}).items():
        m, e = _ci_rows(by_step)
        ax.errorbar(np.arange(1, len(m) + 1), m, yerr=e, linestyle="--", color="black", capsize=3, label=label)
    ax.set_xlabel("deletion request")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_xticks(range(1, 1 + max((len(v) for v in curves.values()), default=1)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def pareto(points: Sequence[dict], front: Sequence[dict], *, x: str, y: str, xlabel: str, ylabel: str, title: str,
           path: str) -> str:
    """Scatter of completed trials with the non-dominated ones highlighted."""
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    ax.scatter([p[x] for p in points], [p[y] for p in points], s=18, alpha=0.6, label="completed trials")
    fr = sorted(front, key=lambda p: p[x])
    ax.plot([p[x] for p in fr], [p[y] for p in fr], "o-", color="crimson", label="Pareto front")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def optuna_figure(kind: str, study, *, target_index: int | None, target_name: str, title: str, path: str) -> str | None:
    """Optuna's own matplotlib plots (history, importances) for one objective; None when not enough trials."""
    import optuna.visualization.matplotlib as ovm

    target = None if target_index is None else (lambda t, i=target_index: t.values[i])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        try:
            if kind == "history":
                ax = ovm.plot_optimization_history(study, target=target, target_name=target_name)
            else:
                ax = ovm.plot_param_importances(study, target=target, target_name=target_name)
        except (ValueError, RuntimeError, ZeroDivisionError):
            return None  # e.g. importances need ≥ 2 completed trials with varying parameters
    ax = ax[0] if isinstance(ax, np.ndarray) else ax
    for loc in ("left", "right"):  # Optuna puts its generic title on the left; ours says dataset/arch/metric
        ax.set_title("", loc=loc)
    ax.set_title(title)
    return save(ax.figure, path)
