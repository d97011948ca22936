"""User-facing errors of ``seg``: one family, :class:`SegError`, shared with ``seg-run``.

A :class:`SegError` means "the input or the settings are wrong, and the message says how": the
CLI prints it as one line (exit 2) and shows a traceback only with ``--debug``. Anything else
is a bug and keeps its traceback. This module is a leaf: it imports nothing of ``seg``.
"""

from __future__ import annotations

from seg_runtime.errors import SegError, is_environment_error, one_line

__all__ = ["CheckpointError", "ConfigError", "SegError", "UnknownNameError", "is_user_error", "one_line"]


class ConfigError(SegError, ValueError):
    """A config that cannot be used; the message names the file and the key."""


class UnknownNameError(ConfigError, KeyError):
    """A registry lookup of a name that is not registered (the message lists close matches)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(SegError, ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the model its config describes."""


# Operating-system errors about the user's own paths: their message names the path and the problem.
USER_OS_ERRORS = (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError)


def is_user_error(err: BaseException) -> bool:
    """Errors whose message is the whole story: print one line, no traceback (unless ``--debug``)."""
    return isinstance(err, (SegError, *USER_OS_ERRORS)) or is_environment_error(err)
