"""Result files: written atomically (local folders and fsspec URIs alike), so readers never see half a file."""
from __future__ import annotations

from unlearn_core.artifacts import write_atomic
from unlearn_core.jsonable import dumps


def write_text(url: str, text: str) -> None:
    write_atomic(url, text.encode())


def write_json(url: str, obj, **kw) -> None:
    """JSON through the project's one sanitizer (numpy scalars, non-finite floats, tuples)."""
    write_text(url, dumps(obj, **kw))
