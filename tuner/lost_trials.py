"""Trials Tune lost: started and finished by a driver killed before its next experiment snapshot.

A resumed Tuner restores the trials its last snapshot holds. A trial that started after that snapshot and
finished before the kill is gone from Tune, yet it ran its schedule: Optuna was told its values, and its saved
state (tuner/trial_state.py) still holds its last report. Its trials.csv row is rebuilt from that report, its
config from the study trial told the same values, so trials.csv and the study keep one row per trial.

    rows += lost_trial_rows(f"{exp_dir}/trial-state", rows, study, "scrub", ("final_sel_tow", "final_sel_tow_mia"),
                            "digits", "resnet18")
"""
from __future__ import annotations

import json
from typing import Sequence

from .trial_schema import trial_row, trial_status
from .trial_state import TrialState


def lost_trial_rows(state_dir: str, rows: Sequence[dict], study, space, metrics: Sequence[str], dataset: str,
                    arch: str) -> list[dict]:
    """Rows of the finished trials saved in `state_dir` that are not among `rows` (the trials Tune returned);
    `metrics` are the keys Optuna was told, in the study's order."""
    import optuna

    import search_spaces

    known = {r["trial_id"] for r in rows}
    lost = [t for t in TrialState.saved_ids(state_dir) if t not in known]
    if not lost:
        return []
    # the study's COMPLETE trials that none of Tune's own rows accounts for (one study trial per row's config)
    unclaimed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    for r in rows:
        if r["status"] in ("completed", "diverged"):
            params = json.loads(r["params"])
            same = next((t for t in unclaimed if search_spaces.to_config_params(space, t.params) == params), None)
            if same is not None:
                unclaimed.remove(same)
    found = []
    for trial_id in lost:
        saved = TrialState(state_dir, trial_id).load()
        if saved is None or saved["run"] is not None or not saved["row"].get("final"):
            continue  # it never finished: the resumed search closes its study trial as FAIL
        row = saved["row"]
        match = next((t for t in unclaimed if t.values == [row[k] for k in metrics]), None)
        if match is None:
            continue
        unclaimed.remove(match)
        found.append(trial_row(dataset, arch, trial_id, trial_status(row, errored=False, interrupted=False), row,
                               None, json.dumps(search_spaces.to_config_params(space, match.params))))
    return found
