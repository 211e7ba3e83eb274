"""What can be checked about a run before anything trains or is written: the method and the requests.

`check` needs no data (names, hyperparameters, counts); `check_sizes` needs only the training split's size and
labels, so the tuner runs both before Ray starts. `run.start` runs them again on its own workspace.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from .errors import ConfigError
from .forget import class_forget, request_classes, retain_ids, validate_ids
from .proxies import check_proxy
from .spec import RANKING_MODELS, ExperimentSpec
from .unlearning import ALGORITHMS, config_dict, make_config


@dataclass(frozen=True)
class Method:
    """A validated algorithm and its config (RUM's config is its plan and proxy)."""

    algorithm: str
    cfg: Any

    @property
    def params(self) -> dict:
        return config_dict(self.cfg)

    @property
    def unlearner(self):
        return ALGORITHMS.get(self.algorithm)


def method(algorithm: str, params: Optional[Mapping[str, Any]], spec: ExperimentSpec) -> Method:
    """Check the algorithm and its hyperparameters (the one place they are checked) and bind spec defaults."""
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {algorithm!r}; valid: {', '.join(ALGORITHMS.names())}")
    cls = ALGORITHMS.get(algorithm)
    return Method(algorithm, cls.bind(make_config(algorithm, params), spec))


def _count(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"requests (the number of deletion requests) must be an integer >= 1, got {k!r}")
    return int(k)


def check_sizes(spec: ExperimentSpec, n_train: int, labels: np.ndarray, m: Method, requests: int,
                forget_ids: Optional[np.ndarray] = None) -> None:
    """Checks that need the data: the requests must fit the training split (nothing trains here)."""
    needs3 = m.algorithm == "rum" or (spec.forget == "mix" and forget_ids is None)
    if forget_ids is not None:
        validate_ids(forget_ids, n_train)
        retain_ids(n_train, forget_ids)  # something must be left to retain
        return
    if spec.forget == "class":
        sizes = [len(class_forget(labels, c)) for c in request_classes(spec.forget_classes, requests)]
        if sum(sizes) >= n_train:
            raise ConfigError(f"forgetting classes {spec.forget_classes} removes all {n_train} training examples; "
                              "nothing would be left to retain")
        if needs3 and min(sizes) < 3:
            raise ConfigError(f"RUM splits each request into 3 groups; a request of {min(sizes)} examples is too small")
        return
    n = spec.resolved_forget_size
    if needs3 and n < 3:
        raise ConfigError(f"{'RUM' if m.algorithm == 'rum' else 'mix'} splits each request into 3 groups "
                          f"(low, mid, high): forget_size must be >= 3, got {n}")
    if requests * n >= n_train:
        raise ConfigError(f"{requests} requests of {n} examples need {requests * n} distinct examples plus at least "
                          f"one to retain, but the train split has {n_train}")


def check(spec: ExperimentSpec, algorithm: str, params: Optional[Mapping[str, Any]] = None, *, requests: int = 1,
          ranking_model: str = "current", forget_ids: Optional[np.ndarray] = None) -> Method:
    """Every check that needs no data: the algorithm, its hyperparameters, the counts, names. Returns the method."""
    m = method(algorithm, params, spec)
    requests = _count(requests)
    if ranking_model not in RANKING_MODELS:
        raise ConfigError(f"ranking_model must be one of {', '.join(RANKING_MODELS)}, got {ranking_model!r}")
    check_proxy(spec.proxy)  # a typo is a typo, even where the proxy is not used (scores:FILE: the file is read)
    if spec.forget == "class":
        request_classes(spec.forget_classes, requests)
    if forget_ids is not None:
        if requests != 1:
            raise ConfigError("a fixed forget set is one request")
        if m.algorithm == "rum" and len(forget_ids) < 3:
            raise ConfigError(f"RUM needs a forget set of at least 3 examples, got {len(forget_ids)}")
    return m
