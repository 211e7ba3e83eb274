"""A search whose driver was killed (SIGKILL, the OOM killer) leaves its local Ray's agents running for a minute
or more; the next search that starts a local Ray stops them and says so, and touches no live node's agents."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tuner.connect import AGENTS, stop_orphaned_agents

DRIVER = "import ray, time; ray.init(address='local', include_dashboard=True, dashboard_host='127.0.0.1'); " \
         "print('up', flush=True); time.sleep(600)"


def agents() -> dict[int, int]:
    """pid -> parent pid of this user's Ray agents."""
    out = {}
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{d}/stat") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError, IndexError):
            continue
        if cmd.startswith(AGENTS) and state not in "ZX" and os.stat(f"/proc/{d}").st_uid == os.getuid():
            out[int(d)] = int(ppid)
    return out


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="Linux /proc")
def test_agents_of_a_killed_driver_are_stopped_by_the_next_start():
    before = agents()
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        assert driver.stdout.readline().strip() == "up"
        deadline = time.monotonic() + 60
        while not (mine := {p: pp for p, pp in agents().items() if p not in before}):
            assert time.monotonic() < deadline, "the local Ray started no agents"
            time.sleep(0.5)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    deadline = time.monotonic() + 120
    while any(agents().get(p, 1) != 1 for p in mine):  # each one gone, or re-parented once its raylet is gone
        assert time.monotonic() < deadline, f"agents {mine} are neither gone nor orphaned: {agents()}"
        time.sleep(0.5)
    orphans = [p for p in mine if p in agents()]
    lines = []
    assert stop_orphaned_agents(lines.append) >= len(orphans)
    if orphans:
        assert "left by a local Ray whose driver was killed" in lines[0], lines
    assert not mine.keys() & agents().keys(), "agents of the killed driver's Ray are still running"
