"""The entries of the store of accepted work: states, ids and names, and :class:`Entry` itself.

See :mod:`seg_runtime.store` for the layout and the rules.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import SegError

__all__ = ["ACCEPTED", "DONE", "ENTRY_FILE", "FAILED", "FINISHED", "FOLDERS", "ID_PATTERN", "NAME_PATTERN",
           "RECEIVING", "RUNNING", "STATES", "Entry", "StoreError", "StoreFull", "check_id", "check_name"]

RECEIVING, ACCEPTED, RUNNING, DONE, FAILED = "receiving", "accepted", "running", "done", "failed"
STATES = (RECEIVING, ACCEPTED, RUNNING, DONE, FAILED)
FINISHED = (DONE, FAILED)
_NEXT = {RECEIVING: {ACCEPTED, FAILED}, ACCEPTED: {RUNNING, FAILED}, RUNNING: {DONE, FAILED, ACCEPTED},
         DONE: {ACCEPTED, FAILED}, FAILED: {ACCEPTED}}
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ENTRY_FILE = "entry.json"
FOLDERS = ("input", "output")
_CHUNK = 1 << 20


class StoreError(SegError, ValueError):
    """A request the store refuses: a bad id or file name, an unknown entry, a wrong state."""


class StoreFull(StoreError):
    """Accepting these bytes would put the store over its quota."""


def check_id(entry_id: str) -> str:
    """``entry_id`` if it is a well-formed entry id, else :class:`StoreError` (before any path use)."""
    if not isinstance(entry_id, str) or not ID_PATTERN.fullmatch(entry_id):
        raise StoreError(f"not a valid entry id: {str(entry_id)[:80]!r}")
    return entry_id


def check_name(name: str) -> str:
    """``name`` if it is a safe file name (one path component, no ``..``), else :class:`StoreError`."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise StoreError(f"not a safe file name: {str(name)[:80]!r}")
    return name


@dataclass
class Entry:
    """One piece of accepted work as ``entry.json`` describes it.

    Attributes:
        id: The random entry id (a folder name).
        kind: What the front door calls it (``job``, ``series``).
        state: One of :data:`STATES`.
        meta: The front door's metadata (model name, series UID, ...); JSON-serialisable.
        created, updated: Epoch seconds.
        finished: Epoch seconds of ``done``/``failed``; None before.
        attempts: How often the entry was started (``running``).
        error: The one-line failure of a ``failed`` entry.
        outputs: Output file name -> ``{"bytes", "blake2b"}`` recorded when it finished.
        record: The run record's line for this entry's case (or anything the front door keeps).
        path: The entry's folder (not stored).
    """

    id: str
    kind: str
    state: str
    meta: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    updated: float = 0.0
    finished: float | None = None
    attempts: int = 0
    error: str | None = None
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    record: dict[str, Any] | None = None
    path: Path = field(default=Path("."), repr=False, compare=False)

    @property
    def input_dir(self) -> Path:
        return self.path / "input"

    @property
    def output_dir(self) -> Path:
        return self.path / "output"

    def to_dict(self) -> dict[str, Any]:
        """The stored fields (``path`` left out)."""
        data = asdict(self)
        del data["path"]
        return data

    def last_activity(self) -> float:
        """The newest of ``updated`` and the input files' modification times (epoch seconds)."""
        times = [self.updated]
        with contextlib.suppress(OSError), os.scandir(self.input_dir) as items:
            times += [item.stat().st_mtime for item in items if item.is_file()]
        return max(times)


def _chunks(source: bytes | IO[bytes]) -> Iterator[bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = memoryview(source)
        for start in range(0, len(data), _CHUNK):
            yield bytes(data[start:start + _CHUNK])
        return
    while chunk := source.read(_CHUNK):
        yield chunk


def _data_bytes(entry: Path) -> int:
    """Bytes an entry holds in its files (``entry.json`` is bookkeeping, not counted)."""
    return sum(_tree_bytes(entry / name) for name in FOLDERS)


def _tree_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (0 when it is gone)."""
    total = 0
    for base, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(base, name)).st_size
    return total
