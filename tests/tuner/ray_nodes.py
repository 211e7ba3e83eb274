"""A real multi-node Ray cluster on one machine, for tests: `ray start --head` + `ray start --address` nodes.

Each node is its own `ray start --block` process, started in a new session, with its own short `--temp-dir` and
free ports (GCS, client server, dashboard, agents), so it neither collides with nor touches any other Ray on the
machine (another test's `ray.init()`, a developer's cluster). Teardown kills exactly the processes of those
sessions — never `ray stop`, which stops every Ray on the machine.

Token auth is on (`RAY_AUTH_MODE=token`) with a token made by `ray get-auth-token --generate` in a private HOME
and handed to every node and driver through `RAY_AUTH_TOKEN_PATH`, so a token in the user's `~/.ray` is neither
needed nor used.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of session `sid` (what `ray start` spawned keeps its session)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] not in "ZX":
            pids.append(int(d.name))
    return pids


def kill_session(sid: int, timeout: float = 15) -> None:
    """SIGKILL every process of one session; wait until none is alive."""
    deadline = time.monotonic() + timeout
    while True:
        pids = session_pids(sid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} of session {sid} survive SIGKILL")
        time.sleep(0.2)


class Node:
    """One `ray start --block` process (head or worker node) and everything it spawned."""

    def __init__(self, name: str, args: list[str], env: dict, temp_dir: str, log_path: Path, num_cpus: int):
        self.name, self.temp_dir, self.log_path, self.num_cpus = name, temp_dir, log_path, num_cpus
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen([RAY, "start", "--block", *args], env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.sid = self.proc.pid
        self.node_id: Optional[str] = None

    def wait_ready(self, timeout: float = 120) -> str:
        """Wait for `ray start` to report the node up (registered with the GCS); return the node id."""
        deadline = time.monotonic() + timeout
        pattern = re.compile(r"Setting node ID node_id=([0-9a-f]{56})")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start ({self.name}) exited {self.proc.returncode}:\n{self.log()}")
            if "Ray runtime started" in self.log():
                for f in Path(self.temp_dir).glob("session_*/logs/raylet.out"):
                    m = pattern.search(f.read_text(errors="replace"))
                    if m:
                        self.node_id = m.group(1)
                        return self.node_id
            time.sleep(0.5)
        raise TimeoutError(f"{self.name}: not up after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def alive(self) -> bool:
        return bool(session_pids(self.sid))

    def kill(self) -> None:
        """SIGKILL the node: `ray start`, raylet, agents and the workers (trials) it runs; GCS too on the head."""
        kill_session(self.sid)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


class Cluster:
    """Head + worker nodes as separate processes on this machine; `env` is what drivers must run with."""

    def __init__(self, root: Optional[str] = None):
        # Short: AF_UNIX socket paths under --temp-dir must stay under 107 bytes.
        self.root = Path(root or tempfile.mkdtemp(prefix="rn", dir="/tmp"))
        self.nodes: list[Node] = []
        home = self.root / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("RAY_") or k == "RAY_memory_monitor_refresh_ms"}
        subprocess.run([RAY, "get-auth-token", "--generate"], env={**env, "HOME": str(home)}, check=True,
                       capture_output=True, timeout=60)
        self.token_path = home / ".ray" / "auth_token"
        root_dir = str(Path(__file__).resolve().parents[2])  # this checkout, for the nodes' worker processes
        self.env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path),
                    "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": os.pathsep.join(p for p in (root_dir, env.get("PYTHONPATH", "")) if p)}
        self.port: Optional[int] = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _common(self, name: str, num_cpus: int, num_gpus: int, resources: Optional[dict]) -> tuple[list, str]:
        temp = str(self.root / name)
        args = ["--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
                f"--temp-dir={temp}", "--object-store-memory=200000000", "--disable-usage-stats",
                f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}"]
        if resources:
            args.append(f"--resources={json.dumps(resources)}")
        return args, temp

    def start_head(self, num_cpus: int = 1, num_gpus: int = 0, resources: Optional[dict] = None,
                   dashboard: bool = False) -> Node:
        """The head node; with `dashboard`, its dashboard (and Ray Jobs' server) at `self.dashboard_url`."""
        self.port, self.dashboard_port = free_port(), free_port()
        args, temp = self._common("head", num_cpus, num_gpus, resources)
        args += ["--head", f"--port={self.port}", f"--include-dashboard={str(dashboard).lower()}",
                 "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                 f"--ray-client-server-port={free_port()}"]
        node = Node("head", args, self.env, temp, self.root / "head.log", num_cpus)
        self.nodes.append(node)
        node.wait_ready()
        return node

    def add_node(self, name: str, num_cpus: int = 1, num_gpus: int = 0, resources: Optional[dict] = None) -> Node:
        assert self.port, "start_head first"
        args, temp = self._common(name, num_cpus, num_gpus, resources)
        args += [f"--address={self.address}"]
        node = Node(name, args, self.env, temp, self.root / f"{name}.log", num_cpus)
        self.nodes.append(node)
        node.wait_ready()
        self.wait_for_cpus(sum(n.num_cpus for n in self.nodes if n.alive()))
        return node

    def wait_for_cpus(self, cpus: int, timeout: float = 120) -> None:
        """Wait until a driver joining now counts `cpus` CPUs. A node's resources reach the cluster's view a
        moment after it registers (seconds on a loaded machine); a search that joined before would size its
        concurrency without them and run every trial on the head."""
        code = ("import sys, time, ray\n"
                "ray.init(address=sys.argv[1], logging_level='ERROR')\n"
                "end = time.monotonic() + float(sys.argv[3])\n"
                "while ray.cluster_resources().get('CPU', 0) < float(sys.argv[2]):\n"
                "    if time.monotonic() > end:\n"
                "        sys.exit(f\"the cluster counts {ray.cluster_resources().get('CPU', 0)} CPUs\")\n"
                "    time.sleep(0.2)\n")
        p = subprocess.run([sys.executable, "-c", code, self.address, str(cpus), str(timeout)], env=self.env,
                           capture_output=True, text=True, timeout=timeout + 60)
        if p.returncode:
            raise TimeoutError(f"not {cpus} CPUs after {timeout}s: {p.stderr[-2000:]}")

    def shutdown(self) -> None:
        for node in reversed(self.nodes):  # workers first, the head (GCS) last
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)
