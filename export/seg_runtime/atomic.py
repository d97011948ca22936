"""Atomic file writes: a temp file in the destination folder, then ``os.replace``.

A run that is killed mid-write leaves either the old file or the new one, never a partial
file; the temp file carries the destination's suffixes so format-sniffing writers
(nibabel picks gzip from ``.nii.gz``) behave as they would on the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

TEMP_PREFIX = ".tmp-"
# A leftover younger than this may be another process's write in progress (a shard, a rank).
STALE_AFTER_S = 3600.0


def _suffixes(name: str) -> str:
    """Return the full suffix of ``name`` (``.nii.gz`` for ``a.nii.gz``)."""
    stem = name.lstrip(".")
    return "." + stem.split(".", 1)[1] if "." in stem else ""


def _create_temp(target: Path) -> Path:
    """Create an empty, uniquely named temp file next to ``target``.

    Unlike ``tempfile.mkstemp`` (mode 0600) the file gets the usual 0666 & ~umask mode,
    which the final file keeps after the rename.
    """
    for _ in range(100):
        tmp = target.parent / f"{TEMP_PREFIX}{target.name}.{secrets.token_hex(4)}{_suffixes(target.name)}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"cannot create a temp file next to {target}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success move it onto ``path``.

    The caller writes the temp path completely; only then is it renamed over the target.
    On any exception the temp file is removed and the target is left untouched.

    Args:
        path: Final destination.

    Yields:
        An empty temp file in the same folder, to be written by the caller.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(target)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a temp file next to ``path`` for writing; on success flush, fsync and rename it onto ``path``.

    Args:
        path: Final destination.
        mode: ``"wb"`` or ``"w"`` (text is UTF-8).
        newline: As :func:`open`'s, for text (``""`` for the csv module).

    Yields:
        The open file.
    """
    encoding = None if "b" in mode else "utf-8"
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding, newline=newline) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a folder's entries (a rename, a new file) durable: fsync the folder itself.

    A no-op where folders cannot be opened for reading (not POSIX).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (PermissionError, IsADirectoryError):  # pragma: no cover - non-POSIX
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (flushed and fsynced before the rename)."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], payload: Any, indent: int | None = 2) -> None:
    """Write ``payload`` as JSON (a trailing newline) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(payload, indent=indent, default=str) + "\n")


def stage_dir(target: str | os.PathLike[str], suffix: str = "") -> Path:
    """A fresh hidden temp folder next to ``target`` (same file system: renaming it onto ``target``
    is atomic); a killed writer's leftover is swept by :func:`remove_stale` like a temp file.

    Unlike ``tempfile.mkdtemp`` (mode 0700) the folder gets the usual 0777 & ~umask mode, which the
    final folder keeps after the rename: a bundle or cache entry is as readable as any other folder.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        folder = target.parent / f"{TEMP_PREFIX}{target.name}.{secrets.token_hex(4)}{suffix}"
        try:
            os.mkdir(folder, 0o777)
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"cannot create a temp folder next to {target}")


def temp_entries(folder: str | os.PathLike[str]) -> list[Path]:
    """The ``.tmp-*`` entries directly in ``folder`` (none when it does not exist)."""
    try:
        with os.scandir(folder) as entries:
            return [Path(e.path) for e in entries if e.name.startswith(TEMP_PREFIX)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def remove_stale(paths: Iterable[Path], age_s: float = STALE_AFTER_S) -> int:
    """Remove what killed writers left (temp files or folders) once older than ``age_s``.

    Returns:
        How many were removed.
    """
    now, removed = time.time(), 0
    for path in paths:
        try:
            if now - path.lstat().st_mtime <= age_s:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink()
            removed += 1
        except OSError:
            pass  # another process removed it first
    return removed
