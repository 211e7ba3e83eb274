"""Content-addressed artifact store: originals, retrains, proxy scores — computed once, reused everywhere.

An artifact's key is a hash of everything that determines it (dataset fingerprint, split seed, arch, width,
recipe, seed, forget ids, format version), so a second search, a resumed search or a parallel worker finds
it instead of recomputing it. Root: a local folder or any fsspec URI (s3://, gs://, an NFS mount path), so a
Ray cluster can share one store.

Safety: writes go to a temporary file in the same folder and are renamed into place (a reader never sees a
half-written file); every payload has a sha256 sidecar that is checked on read, so a corrupt or truncated
file is detected, removed and rebuilt — never silently used; reads use `torch.load(weights_only=True)`.
Two local processes that ask for the same artifact at once serialize on a lock file: one builds, the
other then reads.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import uuid
import warnings
from typing import Any, Callable, Optional

import fsspec
import numpy as np
import torch

from .errors import ArtifactError

FORMAT_VERSION = 1  # bump when the meaning or layout of a stored artifact changes


def _canonical(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return {"sha256": hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest(), "shape": list(v.shape),
                "dtype": str(v.dtype)}
    if isinstance(v, dict):
        return {str(k): _canonical(x) for k, x in sorted(v.items())}
    if isinstance(v, (list, tuple)):
        return [_canonical(x) for x in v]
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return v


@functools.lru_cache(maxsize=None)
def code_fingerprint(root: Optional[str] = None) -> str:
    """Short sha256 of the package's Python sources (`root`: another copy of it): keys results that depend on
    what the code computes, not only on its inputs. Kept per process, as the code a process runs is the code it
    loaded."""
    root = root or os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:16]


def artifact_key(kind: str, **parts: Any) -> str:
    """Stable hex key of `kind` and `parts` (arrays are hashed by content; dict order does not matter)."""
    blob = json.dumps({"kind": kind, "format": FORMAT_VERSION, "parts": _canonical(parts)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class ArtifactStore:
    """Artifacts are dicts of tensors and plain values, stored at ROOT/<kind>/<key>.pt (+ .sha256)."""

    def __init__(self, root: str):
        self.root = str(root).rstrip("/")
        self.fs, self._base = fsspec.core.url_to_fs(self.root)
        self.local = _is_local(self.fs)

    def path(self, kind: str, key: str) -> str:
        return f"{self._base}/{kind}/{key}.pt"

    def exists(self, kind: str, key: str) -> bool:
        return self.fs.exists(self.path(kind, key)) and self.fs.exists(self.path(kind, key) + ".sha256")

    def load(self, kind: str, key: str) -> Optional[dict]:
        """The stored artifact, or None if absent. A corrupt one is removed (with a warning) and None returned."""
        path = self.path(kind, key)
        try:
            with self.fs.open(path, "rb") as f:
                blob = f.read()
            with self.fs.open(path + ".sha256", "r") as f:
                want = f.read().strip()
        except FileNotFoundError:
            return None
        if hashlib.sha256(blob).hexdigest() != want:
            self._discard(path, "checksum mismatch")
            return None
        try:
            return torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")
        except Exception as e:  # a file with the right checksum that does not unpickle: written by other code
            self._discard(path, f"unreadable ({type(e).__name__})")
            return None

    def save(self, kind: str, key: str, obj: dict) -> None:
        """Write atomically: temp file + rename for the payload, then its checksum (the commit marker)."""
        buf = io.BytesIO()
        torch.save(obj, buf)
        blob = buf.getvalue()
        path = self.path(kind, key)
        self.fs.makedirs(os.path.dirname(path), exist_ok=True)
        put_atomic(self.fs, path, blob)
        put_atomic(self.fs, path + ".sha256", hashlib.sha256(blob).hexdigest().encode())

    def get_or_build(self, kind: str, key: str, build: Callable[[], dict]) -> tuple[dict, bool]:
        """(artifact, built_now): load it, or build and save it under a lock so concurrent askers build once."""
        found = self.load(kind, key)
        if found is not None:
            return found, False
        with self._lock(kind, key):
            found = self.load(kind, key)  # another process may have built it while we waited
            if found is not None:
                return found, False
            obj = build()
            self.save(kind, key, obj)
            return obj, True

    def _discard(self, path: str, why: str) -> None:
        warnings.warn(f"artifact {path} is corrupt ({why}); it will be rebuilt", stacklevel=3)
        for p in (path, path + ".sha256"):
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(p)

    @contextlib.contextmanager
    def _lock(self, kind: str, key: str):
        if not self.local:  # no cross-machine lock on object stores: a double build is wasted work, not corruption
            yield
            return
        from filelock import FileLock  # portable (fcntl is POSIX only)

        lock_path = self.path(kind, key) + ".lock"
        os.makedirs(os.path.dirname(lock_path), exist_ok=True)
        with FileLock(lock_path):
            yield


def _is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def put_atomic(fs, path: str, blob: bytes) -> None:
    """Write `blob` to `path` on `fs` via a unique temp name + rename: readers see the old file or the new one."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with fs.open(tmp, "wb") as f:
            f.write(blob)
        if _is_local(fs):
            os.replace(tmp, path)  # atomic on POSIX
        else:
            fs.mv(tmp, path)  # object stores: the PUT of the final name is atomic
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def write_atomic(url: str, blob: bytes) -> None:
    """`put_atomic` for a local path or fsspec URI, creating its folder (result files of searches and studies)."""
    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(os.path.dirname(path), exist_ok=True)
    put_atomic(fs, path, blob)


def require(obj: Optional[dict], what: str) -> dict:
    if obj is None:
        raise ArtifactError(f"{what} is missing from the artifact store")
    return obj
