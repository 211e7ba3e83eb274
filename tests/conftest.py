"""Shared by every test folder."""
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
