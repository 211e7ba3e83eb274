"""The winner rule and what the published table says — pure functions, no Ray."""
from __future__ import annotations

import pytest

from tuner.final_runs import paired, rank
from tuner.outputs import best_configs_markdown
from tuner.settings import fresh_seeds


def runs(values, *, report=None, diverged=()):
    """Per-seed rows: selection ToW = ToW-MIA = value; report values default to the same."""
    report = report or values
    return [{"seed": s, "sel_tow": v, "sel_tow_mia": v, "tow": r, "tow_mia": r, "unlearn_seconds": 1.0,
             "diverged": {"reason": "x"} if s in diverged else None}
            for s, v, r in zip((1, 2, 3), values, report)]


def test_the_highest_lower_bound_of_the_selection_objective_wins_not_the_highest_mean():
    steady = {"label": "steady", "params": {}, "runs": runs([0.95, 0.95, 0.96])}
    lucky = {"label": "lucky", "params": {}, "runs": runs([0.90, 1.00, 1.00])}
    ranked = rank([lucky, steady], "both", seed=0)
    assert ranked[0]["label"] == "steady"
    assert ranked[1]["objective"]["mean"] > ranked[0]["objective"]["mean"]  # lucky: higher mean ...
    assert ranked[0]["objective"]["low"] > ranked[1]["objective"]["low"]    # ... lower bound


def test_report_metrics_never_decide():
    a = {"label": "a", "params": {}, "runs": runs([0.9, 0.9, 0.9], report=[0.1, 0.1, 0.1])}
    b = {"label": "b", "params": {}, "runs": runs([0.8, 0.8, 0.8], report=[1.0, 1.0, 1.0])}
    assert [c["label"] for c in rank([b, a], "tow", seed=0)] == ["a", "b"]


def test_exact_ties_are_broken_by_a_seeded_random_order_not_by_position():
    same = [{"label": str(i), "params": {}, "runs": runs([0.9, 0.9, 0.9])} for i in range(6)]
    orders = {tuple(c["label"] for c in rank(same, "tow", seed=s)) for s in range(8)}
    assert len(orders) > 1  # the seed decides ...
    assert {tuple(c["label"] for c in rank(same, "tow", seed=3)) for _ in range(3)} == \
        {tuple(c["label"] for c in rank(same, "tow", seed=3))}  # ... reproducibly


def test_a_diverged_run_scores_zero_and_counts_in_n():
    c = rank([{"label": "x", "params": {}, "runs": runs([0.0, 0.9, 0.9], diverged=(1,))}], "tow", seed=0)[0]
    assert c["diverged_runs"] == 1 and c["tow"]["mean"] == pytest.approx(0.6) and len(c["seeds"]) == 3


def test_paired_difference_is_per_seed():
    a = {"runs": runs([0.9, 0.8, 0.7])}
    b = {"runs": runs([0.8, 0.7, 0.6])}
    d = paired(a, b, "tow")
    assert d["mean"] == pytest.approx(0.1) and d["low"] == pytest.approx(0.1) and d["high"] == pytest.approx(0.1)


def test_final_seeds_never_include_the_search_seed():
    assert fresh_seeds(0, 3) == (1, 2, 3)
    assert fresh_seeds(2, 5) == (0, 1, 3, 4, 5)
    assert all(s not in fresh_seeds(s, 5) and len(fresh_seeds(s, 5)) == 5 for s in range(7))


def _summary(beats: bool) -> dict:
    paper = {"label": "paper", "params": {"lr": 0.01}, **{k: {"mean": 0.9, "low": 0.8, "high": 1.0}
             for k in ("objective", "tow", "tow_mia")}, "seeds": [1, 2, 3], "diverged_runs": 0}
    trial = {**paper, "label": "trial t1", "params": {"lr": 0.02}, "diverged_runs": 1}
    cands = [trial, paper] if beats else [paper, trial]
    best = cands[0]
    return {"dataset": "digits", "arch": "resnet18", "label": best["label"], "beats_paper": beats, "paper": paper,
            "candidates": cands, "compared": "trial t1",
            "difference": {k: {"mean": 0.01, "low": -0.02, "high": 0.04} for k in ("tow", "tow_mia")},
            "trials": {"completed": 3, "stopped": 1, "diverged": 1, "error": 0}, "trials_run": 5, "search_seed": 0,
            "objective_name": "both"}


def test_the_table_recommends_the_paper_when_nothing_beats_it_and_never_calls_a_worse_config_best():
    md = best_configs_markdown([_summary(beats=False)])
    assert "**recommended: the paper's config** (no searched config had both a higher lower bound" in md
    assert "best searched (trial t1), not better" in md and "**best**" not in md
    assert "trial t1 − paper (paired, same seeds)" in md and "+0.0100 [-0.0200, +0.0400]" in md
    assert "finals on seeds 1, 2, 3 (never the search seed)" in md and "search seed 0" in md


def test_the_table_names_the_winner_the_paper_row_and_diverged_runs():
    md = best_configs_markdown([_summary(beats=True)])
    lines = [ln for ln in md.splitlines() if ln.startswith("| digits")]
    assert "**recommended**: trial t1" in lines[0] and "| 1 |" in lines[0]  # its diverged run is counted
    assert "| paper |" in lines[1] and "selection objective (val, 95 % CI)" in md and "ToW (test, 95 % CI)" in md
