"""Plain JSON from records: the one sanitizer every output (CLI, tuner files, benchmarks) uses."""
from __future__ import annotations

import json
import math
from typing import Any


def jsonable(v: Any) -> Any:
    """Tuples → lists, numpy/torch scalars → Python, non-finite floats → "inf"/"-inf"/"nan" strings, other
    unknown objects → str; so `json.dumps(jsonable(x), allow_nan=False)` always works."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if hasattr(v, "tolist"):
        return jsonable(v.tolist())
    return str(v)


def dumps(v: Any, **kw) -> str:
    return json.dumps(jsonable(v), allow_nan=False, **kw)
