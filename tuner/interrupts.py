"""Telling an interrupted search from a finished one, whatever the moment of the interrupt.

On SIGINT (Ctrl+C) Tune saves the experiment and stops every running trial, marking it TERMINATED like a
trial that ran its schedule or that ASHA stopped, so trial states cannot tell. What can: Tune calls
`on_trial_complete` (or `on_trial_error`) for every trial it ends itself — schedule done, ASHA's stop, a
failure — and never for those the interrupt cuts off. `TrialEndings` keeps that record for one `fit()`.

SIGTERM (`ray job stop`, a batch scheduler, `kill`) is turned into SIGINT, so it ends a search the same way
(installed after `ray.init`, which sets a SIGTERM handler of its own that exits mid-fit).

    endings = TrialEndings.fresh()
    tune.RunConfig(callbacks=[endings], ...)
    results = tuner.fit()
    interrupted = endings.cut_off(results) or len(results) < num_samples
"""
from __future__ import annotations

import signal

from ray import tune


# What the current fit() has seen, in this driver process. Module state, not the callback's: a restored Tuner
# runs the copy of the callback unpickled from the experiment's state, not the one the driver holds.
_SEEN = {"ended": set(), "started": False}


class TrialEndings(tune.Callback):
    @classmethod
    def fresh(cls) -> "TrialEndings":
        """The callback of a new fit(): forgets what earlier fits saw."""
        _SEEN["ended"], _SEEN["started"] = set(), False
        return cls()

    def on_step_begin(self, iteration, trials, **info):
        if not _SEEN["started"]:  # a restored experiment's trials that had ended before it was interrupted
            _SEEN["started"] = True
            _SEEN["ended"].update(t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR"))

    def on_trial_complete(self, iteration, trials, trial, **info):
        _SEEN["ended"].add(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        _SEEN["ended"].add(trial.trial_id)

    @staticmethod
    def cut_off(trial_ids) -> list[str]:
        """The trials of this fit that Tune did not end itself (an interrupt stopped them)."""
        return [t for t in trial_ids if t not in _SEEN["ended"]]


class StudyUpload(tune.Callback):
    """Uploads a remote journal study's local copy at every trial's end (`study_storage.upload`)."""

    def __init__(self, url: str):
        self.url = url

    def on_trial_complete(self, iteration, trials, trial, **info):
        from .study_storage import upload

        upload(self.url)


def sigterm_as_sigint() -> None:
    """From now on SIGTERM does what SIGINT does at that moment (Tune's handler during a fit, else
    KeyboardInterrupt)."""

    def forward(signum, frame):
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, forward)
