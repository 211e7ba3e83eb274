"""Shared fixtures of the tuner's end-to-end tests: the CLI as a subprocess, and a session folder for experiments.

Every search runs as `python -m tuner.search ...` in its own process, so each starts (and stops) its own local
Ray and nothing of Ray stays in the pytest process. Every search, study and cluster uses the test run's
`shared_store` (tests/conftest.py), across pytest-xdist workers too, so the originals and retrains of digits /
ResNet-18 the searches share are trained once, by whichever asks first.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli_env() -> dict:
    """The environment of a CLI subprocess: this checkout first on the path (Ray's workers inherit it)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tuner.search", *args]


def run_cli(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the CLI to the end; stdout/stderr captured as text."""
    return subprocess.run(cli_command(*args), cwd=cwd, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def search_root(tmp_path_factory) -> Path:
    """A session-wide folder for experiment roots."""
    return tmp_path_factory.mktemp("search")


@pytest.fixture(scope="session")
def search_cli(search_root):
    """`search_cli(*args, timeout=...)`: run the CLI in the session folder; the result has `.wall` (seconds)."""

    def run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        t0 = time.monotonic()
        proc = run_cli(*args, cwd=search_root, timeout=timeout)
        proc.wall = time.monotonic() - t0
        return proc

    return run


@pytest.fixture(scope="session")
def search_popen(search_root):
    """`search_popen(*args, out=path, err=path)`: start the CLI in the background, stdout into `out` and stderr
    into `err` (into `out` too when `err` is None); the process has `.started` (time.monotonic())."""

    def start(*args: str, out: Path, err: Path | None = None) -> subprocess.Popen:
        with open(out, "w") as fo, open(err or os.devnull, "w") as fe:
            proc = subprocess.Popen(cli_command(*args), cwd=search_root, env=cli_env(), stdout=fo,
                                    stderr=fe if err else subprocess.STDOUT)
        proc.started = time.monotonic()
        return proc

    return start


def tail(log: Path | None, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log and log.exists() else ""


def wait_for(cond, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None,
             every: float = 0.5):
    """`cond()`'s first true value, polled every `every` s; fails the test if `proc` exits first or `timeout`
    passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"search exited {proc.returncode} before {what}:\n{tail(log)}")
        time.sleep(every)
    pytest.fail(f"no {what} after {timeout}s:\n{tail(log)}")


def interrupt_when(proc: subprocess.Popen, ready, log: Path, sig: int, what: str, every: float = 0.1,
                   timeout: float = 600) -> int:
    """Send `sig` to a running search once `ready()` is true (`wait_for`); its exit status. The process never
    outlives this call."""
    try:
        wait_for(ready, timeout, what, proc, log, every)
        proc.send_signal(sig)
        return proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server on loopback (moto's server mode, a process of its own so its request handling
    competes with no test for the GIL); yields the environment a client needs (AWS_ENDPOINT_URL and dummy
    credentials), which is also set here so searches started by the tests inherit it."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(tmp_path_factory.mktemp("moto") / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "moto's server did not start"
            time.sleep(0.2)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture
def bucket(s3_server, request) -> str:
    """A new, empty bucket on `s3_server`, named after the test; its name."""
    import re

    import fsspec

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir(name)
    return name
