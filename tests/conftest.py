"""Shared by every test folder."""
import os
from pathlib import Path

import pytest
import torch


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
