"""What the Ray dashboard calls each task of a search or a study: named after what it builds, so the Tasks page,
the timeline and `ray list tasks` read as the search's stages instead of `_prepare_one` × N.

    prepare_task(spec)             # "prepare digits/resnet18 seed 0": the original, retrains, reference metrics
    final_task(spec, "paper")      # "final digits/resnet18 paper seed 1": one re-run of one candidate config
    study_task(cell)               # "study digits/resnet18 RUM scrub (confidence) seed 0": one cell of a study

Trials are Tune's actors (`ImplicitFunc`), which Tune names itself.
"""
from __future__ import annotations


def prepare_task(spec) -> str:
    return f"prepare {spec.dataset}/{spec.arch} seed {spec.seed}"


def final_task(spec, label: str) -> str:
    """`label`: the candidate's ("paper", "trial 1a2b3c4d")."""
    return f"final {spec.dataset}/{spec.arch} {label} seed {spec.seed}"


def study_task(cell) -> str:
    """`cell`: a `tuner.study.Cell`; its method says vanilla or RUM and the proxy."""
    return f"study {cell.dataset}/{cell.arch} {cell.method} seed {cell.seed}"
