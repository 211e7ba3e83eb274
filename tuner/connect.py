"""Joining Ray the way Ray does: `--address`, else the cluster `RAY_ADDRESS` names (what `ray.init()` and Ray
Jobs use: a job's driver finds its cluster there), else a new local Ray on this machine.

    address = cluster_address(None)   # RAY_ADDRESS's value, or None for a local Ray
    resources = connect(address, dashboard=True)
"""
from __future__ import annotations

import os
import socket
from typing import Optional

from unlearn_core.errors import ConfigError


def cluster_address(flag: Optional[str]) -> Optional[str]:
    """The cluster to join: the flag's, else RAY_ADDRESS's; None means "start a local Ray"."""
    return flag or os.environ.get("RAY_ADDRESS") or None


def where(flag: Optional[str]) -> str:
    """Where an address came from, for messages."""
    return "--address" if flag else "RAY_ADDRESS"


def check_address(address: str, source: str = "--address") -> None:
    """Fail fast, with one line, when nothing answers at HOST:PORT (auto and ray:// are Ray's to resolve)."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{source} must be auto or HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise ConfigError(f"no Ray cluster answers at {address} ({source}; {e.strerror or e}); start one with "
                          f"`ray start --head` or fix {source}") from None


def connect(address: Optional[str], *, local_gpus: Optional[float] = None, dashboard: bool = True,
            log=print) -> dict:
    """Join `address` or start a local Ray (dashboard on localhost, token auth as Ray defaults it); return the
    cluster's resources."""
    import ray

    if address:
        try:
            ctx = ray.init(address=address, log_to_driver=False)
        except ConnectionError as e:  # Ray chains the reason (a traceback text) under "Failed to connect"
            why = next((ln for ln in reversed(str(e.__cause__ or e).splitlines()) if ln.strip()), str(e))
            if "InvalidAuthToken" in why:
                why = ("its token auth refused this driver's token; use the cluster's (`ray get-auth-token` on the "
                       "head prints it) via ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN")
            raise ConfigError(f"cannot join the Ray cluster at {address}: {' '.join(why.split())[:300]}") from None
    else:
        stop_orphaned_agents(log)
        kw = {"num_gpus": local_gpus} if local_gpus is not None else {}
        # address="local": always a new local Ray, never a cluster some `ray start` left in /tmp/ray.
        ctx = ray.init(address="local", include_dashboard=dashboard, dashboard_host="127.0.0.1",
                       log_to_driver=False, **kw)
    res = ray.cluster_resources()
    url = getattr(ctx, "dashboard_url", None)
    joined = f"joined {address}" if address else "a local Ray"
    log(f"Ray: {joined}; {int(res.get('CPU', 0))} CPUs, {res.get('GPU', 0):g} GPUs in the cluster"
        + (f"; dashboard http://{url} (token: `ray get-auth-token`)" if url else ""))
    return res


# What a local Ray's node leaves running for a minute or more when its driver is killed (SIGKILL, OOM).
AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def orphaned_agents() -> list[int]:
    """This user's live Ray agents whose node is gone: re-parented to init (a live node's agents are its raylet's
    children). Linux only (/proc); elsewhere none."""
    out = []
    for d in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{d}/stat") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
            if (int(ppid) == 1 and state not in "ZX" and os.stat(f"/proc/{d}").st_uid == os.getuid()
                    and cmd.startswith(AGENTS)):
                out.append(int(d))
        except (OSError, ValueError, IndexError):
            continue
    return out


def stop_orphaned_agents(log=print, grace: float = 3.0) -> int:
    """Stop `orphaned_agents()` (SIGTERM, then SIGKILL after `grace` seconds) before a new local Ray starts;
    say how many."""
    import signal
    import time

    pids = orphaned_agents()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while (left := set(pids) & set(orphaned_agents())) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not left:
            break
    if pids:
        log(f"Ray: stopped {len(pids)} agent process(es) left by a local Ray whose driver was killed")
    return len(pids)
