"""The study's presets, read from `tuner.study` without starting Ray (importing it starts nothing)."""
from __future__ import annotations

import sys

from tuner import study


def test_paper_preset_uses_the_test_split_holdout_proxy():
    proxies = study.PRESETS["paper"]["proxies"]
    assert "holdout_test" in proxies and "holdout" not in proxies   # as the paper (RUM's ho_ret) did
    assert proxies == ["confidence", "max_conf", "entropy", "bin_acc", "holdout_test"]


def test_importing_the_study_starts_no_ray():
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
