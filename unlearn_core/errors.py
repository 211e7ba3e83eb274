"""One small exception hierarchy: every error a user can cause derives from `UnlearnError`.

CLIs catch `UnlearnError` and print its message as one line with a non-zero exit; anything else is a bug
and keeps its traceback.
"""


class UnlearnError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(UnlearnError, ValueError):
    """A name, value or combination of settings that is not valid (says what came in and what is valid)."""


class DataError(UnlearnError):
    """Data that is missing, incomplete or malformed on disk."""


class ArtifactError(UnlearnError):
    """An artifact in the store is corrupt or unreadable and could not be rebuilt."""


class LossDiverged(UnlearnError):
    """An unlearning run's loss went non-finite or past its bound.

    The tuner turns this into a finished trial with `diverged = 1` and `reason` recorded.
    """

    def __init__(self, reason: str, epoch: int, value: float):
        self.reason, self.epoch, self.value = reason, epoch, value
        # `epoch` is 0-based like the loops; the message counts from 1 like every progress line.
        super().__init__(f"loss diverged in epoch {epoch + 1}: {reason} (value={value:.4g})")


def one_line_warnings() -> None:
    """Show warnings as `warning: MESSAGE` on one line (a CLI's choice; Python's default starts with the
    source path and repeats the source line)."""
    import warnings

    warnings.formatwarning = lambda message, category, *args, **kw: f"warning: {' '.join(str(message).split())}\n"
