"""The one family of user-facing errors, shared by ``seg-run`` and ``seg``.

A :class:`SegError` means "the input or the settings are wrong, and the message says how": the
CLIs print it as one line (exit 2) and show a traceback only with ``--debug``. Anything else is a
bug and keeps its traceback. ``seg`` imports this module (``seg.errors``); it has no dependencies.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

# Operating-system errors that are about the user's machine or paths, not a bug: a full disk or
# quota, a read-only or failing file system, missing or forbidden paths. Printed as one line.
ENVIRONMENT_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG, errno.EACCES, errno.EPERM, errno.ENOENT,
    errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP, errno.EXDEV,
})


class SegError(Exception):
    """An error whose message is the whole story for the user (names the file and the problem)."""


class DataError(SegError, ValueError):
    """A dataset that cannot be used (layout, ``dataset.json``, cases); the message names the file, or
    lists every bad case with its problem (also kept in :attr:`problems`)."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


def is_environment_error(exc: BaseException) -> bool:
    """An OSError about the machine or the user's paths (disk full, permission denied...), not a bug."""
    return isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS


def one_line(exc: BaseException) -> str:
    """The message a CLI prints for a user-facing error: ``path: No space left on device`` for an
    OSError (with the second path of a rename), the message itself otherwise."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else exc.filename
        return f"{where}: {exc.strerror}" if where else exc.strerror
    return str(exc)
