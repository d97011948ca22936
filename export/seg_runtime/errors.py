"""The one family of user-facing errors, shared by ``seg-run`` and ``seg``.

A :class:`SegError` means "the input or the settings are wrong, and the message says how": the
CLIs print it as one line (exit 2) and show a traceback only with ``--debug``. Anything else is a
bug and keeps its traceback. ``seg`` imports this module (``seg.errors``); it has no dependencies.
"""

from __future__ import annotations

from collections.abc import Sequence


class SegError(Exception):
    """An error whose message is the whole story for the user (names the file and the problem)."""


class DataError(SegError, ValueError):
    """A dataset that cannot be used (layout, ``dataset.json``, cases); the message names the file, or
    lists every bad case with its problem (also kept in :attr:`problems`)."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)
