"""Search records kept in the artifact store: a finished prepare task's report, and a finished final run's result.

Both are keyed by everything that determines them, so a resumed search, or another search on the same data and
settings (the paper's config is a finalist of every search), reads them instead of running them again. Where the
store lives and the data's folder do not enter a key; the precision does, as resolved on the kind of device the
work runs on (bf16 on CUDA, fp32 on the CPU unless set), so a CPU fp32 result and a GPU bf16 one are never taken
for each other. A final run's key also holds that kind of device and a fingerprint of the `unlearn_core` sources,
so results of other code, or of a GPU run for a CPU run, are never reused. A record the driver cannot read (a store
only the workers reach) is simply not found: the work runs as before.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from unlearn_core.artifacts import ArtifactStore, artifact_key, code_fingerprint
from unlearn_core.numerics import default_precision
from unlearn_core.spec import ExperimentSpec, default_store
from unlearn_core.training import recipe_for


def _experiment(spec: ExperimentSpec, dataset, device: str) -> dict:
    """What fixes the models and sets of `spec` run on `device` ("cuda", "cpu"): the data, the recipe and the
    spec's own fields, its precision resolved there. The memory format is left out: it only lays out the same sums."""
    fields = {k: v for k, v in dataclasses.asdict(spec).items()
              if k not in ("store", "device", "data_dir", "memory_format")}
    fields["precision"] = spec.precision or default_precision(device.split(":")[0])
    return {"data": dataset.fingerprint(), "spec": fields,
            "recipe": dataclasses.asdict(recipe_for(spec.dataset, epochs=spec.train_epochs))}


def prepared_key(spec: ExperimentSpec, dataset, proxies: Sequence[str], requests: int, ranking_model: str,
                 device: str) -> str:
    """`device`: the kind the prepare task runs on ("cuda", "cpu"), which the precision is resolved for."""
    return artifact_key("prepared", **_experiment(spec, dataset, device), proxies=list(proxies), requests=requests,
                        ranking_model=ranking_model)


def final_key(spec: ExperimentSpec, dataset, algorithm: str, params: dict, requests: int, ranking_model: str,
              device: str) -> str:
    """`device`: the kind the run ran on ("cuda", "cpu"): a GPU run is not reused as a CPU run's result, and the
    precision is resolved for it."""
    return artifact_key("final", **_experiment(spec, dataset, device), algorithm=algorithm, params=params,
                        requests=requests, ranking_model=ranking_model, device=device.split(":")[0],
                        code=code_fingerprint())


def store_of(spec: ExperimentSpec) -> ArtifactStore:
    return ArtifactStore(spec.store or default_store())


def load(spec: ExperimentSpec, kind: str, key: str) -> Optional[dict]:
    """The record, or None where it is absent or the store cannot be read from here."""
    try:
        return store_of(spec).load(kind, key)
    except Exception:  # noqa: BLE001  an unreachable store (no mount, no credentials, no fsspec driver): not found
        return None
