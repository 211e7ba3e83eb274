"""Where a search's Optuna study lives, checked before Ray starts and before the experiment is claimed.

Accepted URLs (`--optuna-storage`):

    sqlite:////abs/path/optuna.db        Optuna's RDB storage on one machine's disk
    postgresql://user:pw@host/db         shared by many drivers (mysql:// likewise)
    journal:///abs/path/optuna.log       Optuna's journal file, safe on NFS where SQLite's locking is not

By default a study lives beside the search's results: `sqlite:///STORAGE/NAME/optuna.db` in a local folder, and
`journal://STORAGE/NAME/optuna.log` on an object store (s3://, gs://), where no database can live: the driver
works on a local copy of that journal (in the temporary folder) and uploads it at every trial's end and when the
search stops, so a `--resume` from any machine finds the study. Each experiment has its own studies, named
`NAME/DATASET-ARCH`, so one storage may hold many experiments.

    url = default_url("s3://bucket/unlearn/demo")   # 'journal://s3://bucket/unlearn/demo/optuna.log'
    check_url("sqlite:///rel.db")                   # ConfigError: an absolute path ...
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from typing import Optional

import fsspec

from unlearn_core.errors import ConfigError

SCHEMES = ("sqlite", "postgresql", "mysql", "journal")
JOURNAL = "journal://"


def default_url(exp_dir: str) -> str:
    return f"sqlite:///{exp_dir}/optuna.db" if "://" not in exp_dir else f"{JOURNAL}{exp_dir}/optuna.log"


def check_url(url: str) -> None:
    """One ConfigError line unless `url` names a storage this driver can open or create now (a local file's
    folder must exist and be writable; a database server must answer). Writes nothing on disk."""
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme not in SCHEMES:
        raise ConfigError(f"--optuna-storage {url!r}: expected one of sqlite:////ABS/PATH.db, postgresql://..., "
                          "mysql://..., journal:///ABS/PATH.log")
    if scheme in ("sqlite", "journal"):
        path = url.split("://", 1)[1]
        if scheme == "sqlite":
            path = path[1:] if path.startswith("/") else path  # sqlite:///rel, sqlite:////abs
        if not path or path == ":memory:" or "://" in path:
            raise ConfigError(f"--optuna-storage {url!r}: needs a file on this machine's disk")
        folder = os.path.dirname(os.path.abspath(path)) or "."
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"--optuna-storage {url!r}: {folder} is not a writable folder")
        return
    try:
        open_storage(url)
    except Exception as e:  # noqa: BLE001  SQLAlchemy and driver errors alike: one line saying why
        why = " ".join(str(e).split("\n")[0].split())[:300]
        raise ConfigError(f"--optuna-storage {url!r} cannot be opened: {type(e).__name__}: {why}") from None


def open_storage(url: str):
    """The Optuna storage of `url`; a journal on an object store is opened through its local copy."""
    import optuna

    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend

        remote = remote_journal(url)
        path = local_copy(remote) if remote else url[len(JOURNAL):]
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    return optuna.storages.RDBStorage(url)


def study_name(experiment: str, dataset: str, arch: str) -> str:
    """The Optuna study of one (dataset, arch) of an experiment: one storage may hold many experiments."""
    return f"{experiment}/{dataset}-{arch}"


def remote_journal(url: str) -> Optional[str]:
    """The object-store path of a journal URL that names one (journal://s3://...), else None."""
    path = url[len(JOURNAL):] if url.startswith(JOURNAL) else ""
    return path if "://" in path else None


def local_path(remote: str) -> str:
    """Where a driver keeps its copy of the remote journal `remote`: the same path on every machine, because a
    resumed search's sampler (restored from Tune's state) reopens the path it was created with."""
    return os.path.join(tempfile.gettempdir(), "unlearn-search-studies",
                        hashlib.sha256(remote.encode()).hexdigest()[:16], "optuna.log")


def local_copy(remote: str) -> str:
    """The local file a remote journal is worked on in; filled from the remote one unless this machine's copy
    extends it (a driver stopped after its last upload)."""
    local = local_path(remote)
    os.makedirs(os.path.dirname(local), exist_ok=True)
    fs, path = fsspec.core.url_to_fs(remote)
    fs.invalidate_cache()
    theirs = fs.cat_file(path) if fs.exists(path) else b""
    mine = open(local, "rb").read() if os.path.exists(local) else b""
    if not (theirs and mine.startswith(theirs)):
        with open(local, "wb") as f:
            f.write(theirs)
    return local


def forget_local_copy(url: str) -> None:
    """A new experiment starts from an empty study: drop a local copy an earlier one of that URL left here."""
    remote = remote_journal(url)
    if remote:
        with contextlib.suppress(FileNotFoundError):
            os.remove(local_path(remote))


def upload(url: str) -> None:
    """Copy a remote journal's local copy back beside the results (nothing to do for any other storage)."""
    remote = remote_journal(url)
    if not remote:
        return
    from unlearn_core.artifacts import write_atomic

    local = local_path(remote)
    if os.path.exists(local):
        with open(local, "rb") as f:
            write_atomic(remote, f.read())


def dashboard_hint(url: str) -> str:
    """How to open the study in optuna-dashboard."""
    remote = remote_journal(url)
    if remote:
        return f"{remote} (this machine's copy: optuna-dashboard {local_path(remote)})"
    return f"optuna-dashboard {url[len(JOURNAL):] if url.startswith(JOURNAL) else url}"
