"""How long a search that joined a cluster waits before it exits, so its final gauges are exported and scraped
(the end-to-end check, final counts equal to trials.csv on a node's metrics endpoint: test_ray_jobs.py)."""
from __future__ import annotations

import time

import pytest

from tuner import search_metrics


@pytest.fixture
def last_set(monkeypatch):
    monkeypatch.setattr(search_metrics, "_LAST_SET", [0.0])
    return search_metrics._LAST_SET


def test_a_search_that_set_no_gauge_does_not_wait(last_set):
    assert search_metrics.export_wait() == 0


def test_the_wait_is_two_report_intervals_after_the_last_update(last_set, monkeypatch):
    monkeypatch.setenv("RAY_metrics_report_interval_ms", "1500")
    last_set[0] = time.monotonic()
    assert 2.9 < search_metrics.export_wait() <= 3.0
    last_set[0] = time.monotonic() - 2.0
    assert 0.9 < search_metrics.export_wait() <= 1.0
    last_set[0] = time.monotonic() - 5.0
    assert search_metrics.export_wait() == 0


def test_rays_default_interval_is_ten_seconds(last_set, monkeypatch):
    monkeypatch.delenv("RAY_metrics_report_interval_ms", raising=False)
    last_set[0] = time.monotonic()
    assert 19.9 < search_metrics.export_wait() <= 20.0
