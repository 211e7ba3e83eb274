"""`--download` reaches every CLI: the search, the study and a single run fetch CIFAR when its files are missing,
and a download that fails (no internet; here a mirror on a closed loopback port) says so in one line — not
"pass --download" — before Ray starts and before any experiment folder exists."""
from __future__ import annotations

import socket

import pytest
import ray

import unlearn_core.__main__ as run_cli
from tuner import search, study


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLIS = {
    "search": (search.main, ["scrub"]),
    "study": (study.main, ["--dataset", "cifar10"]),
    "run": (run_cli.main, ["run", "--algorithm", "scrub"]),
}


@pytest.mark.parametrize("cli", CLIS)
def test_a_failed_download_is_one_line_saying_so(tmp_path, in_process, cli):
    main, argv = CLIS[cli]
    data, runs = tmp_path / "data", tmp_path / "runs"
    common = ["--dataset", "cifar10", "--data-dir", str(data)] + (["--storage", str(runs)] if cli != "run" else [])
    mirror = {"UNLEARN_DATA_MIRROR": f"http://127.0.0.1:{closed_port()}/"}
    proc = in_process(main, *argv, *common, "--download", env=mirror)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stdout[-2000:], lines)
    assert "cifar10: download of http://127.0.0.1:" in lines[0] and "failed" in lines[0], lines
    assert not runs.exists() and not ray.is_initialized()
    without = in_process(main, *argv, *common, env=mirror)
    assert without.returncode == 2 and "pass --download" in without.stderr, without.stderr
