"""A trial's saved state: one file per trial under the experiment folder, overwritten atomically every report.

Why not Tune's checkpoints: Tune deletes all but `num_to_keep` of them as new ones arrive, while a resumed
experiment restores each trial from the checkpoint its *last experiment snapshot* named; with more reports
than `num_to_keep` between two snapshots that checkpoint is gone and the trial ends in ERROR. Here there is
only ever the latest state, written before the report that refers to it, so a retried trial (Tune's
`FailureConfig`) or a resumed search (`Tuner.restore`) always finds it. When the trial ends, the weights
are dropped and only its last report stays (so a restarted, finished trial just reports it again).
"""
from __future__ import annotations

import io
import posixpath
from typing import Optional

import fsspec
import torch

from unlearn_core.artifacts import write_atomic


class TrialState:
    def __init__(self, folder: str, trial_id: str):
        self.url = f"{folder.rstrip('/')}/{trial_id}.pt"

    @staticmethod
    def saved_ids(folder: str) -> list[str]:
        """The ids of the trials with a state in `folder`, sorted; the listing is read anew (s3fs caches them)."""
        fs, path = fsspec.core.url_to_fs(folder)
        fs.invalidate_cache(path)
        return sorted(posixpath.basename(p)[:-len(".pt")] for p in fs.glob(f"{path.rstrip('/')}/*.pt"))

    def load(self) -> Optional[dict]:
        """{"run": run state or None (finished), "row": its last report} or None for a new trial."""
        fs, path = fsspec.core.url_to_fs(self.url)
        if not fs.exists(path):
            return None
        with fs.open(path, "rb") as f:
            return torch.load(io.BytesIO(f.read()), weights_only=True, map_location="cpu")

    def save(self, run_state: Optional[dict], row: dict) -> None:
        buf = io.BytesIO()
        torch.save({"run": run_state, "row": row}, buf)
        write_atomic(self.url, buf.getvalue())
