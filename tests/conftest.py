"""Shared by every test folder."""
import contextlib
import io
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional

import pytest
import torch

# One OpenMP thread in every process the tests start too (CLI runs, search drivers, Ray nodes and their workers
# inherit it), for the reason `one_torch_thread` gives; a value set by the caller is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread per test process: these models are tiny, and on a 2-core runner shared with other
    processes (the second pytest-xdist worker, Ray workers) two OpenMP threads each stall one another (measured
    10–40× slower; an in-process tuner test ran 4× slower beside the other worker before this was shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory) -> Path:
    """One artifact store for the tests that only read what it caches: the digits originals, retrains and proxy
    scores several test files build with the same settings are trained once per test run, by whichever asks
    first — across pytest-xdist workers too (their base temporary folders' parent; the store's locks make a
    second builder wait, then read). Tests about what a store holds, or whether it was written, use their own."""
    base = tmp_path_factory.getbasetemp()
    store = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-store"
    store.mkdir(exist_ok=True)
    return store


def _call_main(main: Callable, *argv: str, env: Optional[dict] = None) -> SimpleNamespace:
    """A CLI's `main(argv)` in this process, as a subprocess would show it: .returncode (argparse's SystemExit
    gives its code), .stdout, .stderr; `env`: variables set for this call only."""
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(list(argv))
            except SystemExit as e:  # argparse: --help, bad syntax
                rc = e.code
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.fixture(scope="session")
def in_process() -> Callable[..., SimpleNamespace]:
    """`in_process(main, *argv, env=None)`: a CLI run without an interpreter of its own (see `_call_main`)."""
    return _call_main
