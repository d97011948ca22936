"""The one family of user-facing errors, shared by ``seg-run`` and ``seg``.

A :class:`SegError` means "the input or the settings are wrong, and the message says how": the
CLIs print it as one line (exit 2) and show a traceback only with ``--debug``. Anything else is a
bug and keeps its traceback. ``seg`` imports this module (``seg.errors``); it has no dependencies.
"""

from __future__ import annotations


class SegError(Exception):
    """An error whose message is the whole story for the user (names the file and the problem)."""
