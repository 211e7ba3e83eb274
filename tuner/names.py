"""Experiment names: one path segment under the storage root, so a search or a study never writes outside it.

    check_name("c10-scrub")   # fine
    check_name("../x")        # ConfigError: --name must be one folder name ...
"""
from __future__ import annotations

import re

from unlearn_core.errors import ConfigError

NAME = re.compile(r"[A-Za-z0-9_.-]+")


def check_name(name: str, flag: str = "--name") -> str:
    """`name` if it is letters, digits and `-_.` only, and neither `.` nor `..`; else one ConfigError line."""
    if not NAME.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"{flag} must be one folder name (letters, digits, '-', '_', '.'; not '.' or '..'), "
                          f"got {name!r}")
    return name
