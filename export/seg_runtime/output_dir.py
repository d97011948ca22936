"""The output folder of a prediction run: created and proven writable before any case runs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .atomic import TEMP_PREFIX, remove_stale, temp_entries
from .errors import SegError

logger = logging.getLogger(__name__)


class OutputDirError(SegError, ValueError):
    """The output folder cannot be created or written; the message names it and says why."""


def ensure_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (with parents), check that files can be written in it, and remove the temp
    files that killed runs left there (in it and in ``preview/``) once an hour old.

    Raises:
        OutputDirError: ``path`` (or a parent) is a file, or the folder cannot be created or
            written (permissions, read-only file system).
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputDirError(f"{folder}: output path is a file, not a folder; choose a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from None
    probe = folder / f"{TEMP_PREFIX}write-check-{os.getpid()}"
    try:
        with open(probe, "wb"):
            pass
        probe.unlink()
    except OSError as exc:
        raise OutputDirError(f"{folder}: output folder is not writable ({exc.strerror or exc})") from None
    removed = remove_stale([*temp_entries(folder), *temp_entries(folder / "preview")])
    if removed:
        logger.info("%s: removed %d temp file(s) that killed runs left", folder, removed)
    return folder
