"""Reads a Ray node's metrics endpoint (Prometheus' text format) in the background, as Prometheus would."""
from __future__ import annotations

import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

PREFIX = "ray_unlearn_search_"


class Scraper(threading.Thread):
    """Reads http://127.0.0.1:PORT/metrics every `every` seconds while the search runs; keeps every sample of
    the project's metrics as (time, name, labels, value), the names of every metric family served, and the task
    names in Ray's own task counts (`ray_tasks`)."""

    def __init__(self, port: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.url, self.every = f"http://127.0.0.1:{port}/metrics", every
        self.samples: list[tuple[float, str, dict, float]] = []
        self.families: set[str] = set()
        self.task_names: set[str] = set()
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                text = urllib.request.urlopen(self.url, timeout=5).read().decode()
            except OSError:
                text = ""
            now = time.monotonic()
            # Ray serves thousands of samples; only the project's and `ray_tasks` are kept, so only they are
            # parsed (with every family's HELP/TYPE lines, which name the families). The full parse cost the test
            # ~20 s of CPU on a 2-core runner.
            text = "\n".join(ln for ln in text.splitlines() if ln.startswith(("#", PREFIX, "ray_tasks{", "ray_tasks ")))
            for family in text_string_to_metric_families(text):
                self.families.add(family.name)
                for s in family.samples:
                    if s.name.startswith(PREFIX):
                        self.samples.append((now, s.name, dict(s.labels), s.value))
                    elif s.name == "ray_tasks":
                        self.task_names.add(s.labels.get("Name", ""))
            self.stop.wait(self.every)

    def last(self, name: str, **labels) -> float | None:
        """The latest value of the series `name` whose labels include `labels`."""
        values = [v for _, n, lab, v in self.samples if n == name and labels.items() <= lab.items()]
        return values[-1] if values else None

    def seen(self, name: str, **labels) -> list[float]:
        return [v for _, n, lab, v in self.samples if n == name and labels.items() <= lab.items()]


def metrics_port(cluster) -> int:
    """The head node's `--metrics-export-port` (a tests/tuner/ray_nodes.Cluster)."""
    head = cluster.nodes[0]
    return int(next(a for a in head.proc.args if a.startswith("--metrics-export-port=")).split("=", 1)[1])
