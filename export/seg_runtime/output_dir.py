"""The output folder of a prediction run: created and proven writable before any case runs."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
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


LOCK_NAME = "predictions.lock"


def _flock(path: Path, exclusive: bool) -> int | None:
    """An open descriptor holding a non-blocking flock on ``path``, or None when another holds it."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() or "another run"
    except OSError:
        return "another run"


@contextlib.contextmanager
def run_lock(folder: Path, shard: tuple[int, int] | None) -> Iterator[None]:
    """Hold the output folder for one run, so two runs never both predict the same cases.

    An unsharded run holds ``predictions.lock`` exclusively; a shard holds it shared (shards split
    the cases) and its own ``predictions.shard-i-of-n.lock`` exclusively. The locks are the operating
    system's (``flock``): a killed run releases them, and a second run is refused in one line at once.

    Raises:
        OutputDirError: another run holds what this one needs.
    """
    names = [(LOCK_NAME, shard is None)] + ([(f"predictions.shard-{shard[0]}-of-{shard[1]}.lock", True)] if shard else [])
    held: list[int] = []
    try:
        for name, exclusive in names:
            fd = _flock(folder / name, exclusive)
            if fd is None:
                raise OutputDirError(f"{folder}: {_holder(folder / name)} is writing this folder"
                                     f"{'' if shard else ' (unsharded)'}; wait for it, or split the cases "
                                     "with --shard i/n")
            held.append(fd)
            if exclusive:
                os.ftruncate(fd, 0)
                os.write(fd, f"a run of pid {os.getpid()} on {socket.gethostname()} since "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        yield
    finally:
        for fd in held:
            os.close(fd)
