"""An experiment is claimed before anything of it is written: its search.json is created exclusively (on a local
folder with O_EXCL, on S3 with a conditional put), so of two searches started on one name, one gets it and the
other is refused in one line having touched nothing. A local experiment is also locked for the life of the
search that runs it, so a `--resume` cannot join a search that is still running.

    claim("runs/demo/search.json", b"{...}")   # ConfigError if another search has it
    with running("runs/demo"):                  # ConfigError if another search holds it
        ...
"""
from __future__ import annotations

import contextlib
import os

import fsspec
from filelock import FileLock, Timeout

from unlearn_core.errors import ConfigError

LOCK = ".running.lock"


class Taken(ConfigError):
    """The experiment's marker already exists."""


def claim(url: str, blob: bytes) -> None:
    """Create `url` with `blob` only if it does not exist, atomically where the filesystem can (local, S3)."""
    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with fs.open(path, "xb") as f:
            f.write(blob)
        return
    except FileExistsError:
        raise Taken(url) from None
    except (ValueError, NotImplementedError, TypeError):  # a filesystem without exclusive create: best effort
        pass
    if fs.exists(path):
        raise Taken(url)
    with fs.open(path, "wb") as f:
        f.write(blob)


@contextlib.contextmanager
def running(exp_dir: str):
    """Hold the experiment's lock while the block runs (local folders; an object store has no lock to hold)."""
    if "://" in exp_dir:
        yield
        return
    lock = FileLock(os.path.join(exp_dir, LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(f"experiment {os.path.basename(exp_dir)!r} is running in another search "
                          f"(it holds {lock.lock_file}); wait for it or stop it first") from None
    try:
        yield
    finally:
        lock.release()
