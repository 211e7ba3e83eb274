"""One progress loop for Ray tasks: yield each task's result as it finishes, in finishing order."""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import ray

from unlearn_core.errors import ConfigError


def as_completed(jobs: Mapping[Any, Any]) -> Iterator[tuple[Any, Any]]:
    """For {ObjectRef: label}: yield (label, result) as tasks finish. A `ConfigError` raised inside a task
    comes back as the same one-line ConfigError, not as Ray's remote traceback."""
    pending = list(jobs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        try:
            result = ray.get(done[0])
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, ConfigError):
                raise ConfigError(str(e.cause)) from None
            raise
        yield jobs[done[0]], result
