"""The on-disk store of accepted work: one module for both front doors (the service's jobs, the DICOM
node's pending series).

An entry is a folder of input files, its metadata and state, and its outputs::

    ROOT/                         mode 0700 (and every folder below it)
      entries/<id>/
        entry.json                id, kind, state, meta, times, attempts, error, outputs, record
        input/                    the files as received, named by the front door (never by a client)
        output/                   the results
      entries/.tmp-<id>.<hex>/    an entry being staged (gone on failure; swept when stale)

States: ``receiving`` (the node: instances still arriving) -> ``accepted`` -> ``running`` ->
``done`` | ``failed``. Every write is atomic (temp + rename), fsynced, and the folder holding it is
fsynced too, so once :meth:`Store.stage`, :meth:`Store.create` or :meth:`Store.add_file` returns, the
work survives a kill: only then may a front door acknowledge it (HTTP 202, C-STORE success).

On restart :meth:`Store.recover` puts ``running`` entries back to ``accepted`` and re-checks every
``done`` entry's outputs against their recorded size and BLAKE2b (one missing or altered is run
again), so nothing accepted is lost and nothing is reported done without its file. Finished entries
expire after ``keep_hours`` (:meth:`Store.expire`); the store holds at most ``quota_bytes``.

Ids are random (:meth:`Store.new_id`) and checked against :data:`ID_PATTERN` before they touch a
path; file names against :data:`NAME_PATTERN` (a DICOM UID + ``.dcm`` passes; a client's file name
must never be used). No torch, no network: the front doors own those.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from ..atomic import atomic_open, atomic_write_json, fsync_dir, remove_stale, stage_dir, temp_entries
from ..hashing import file_digest
from .entry import (
    _NEXT,
    ACCEPTED,
    DONE,
    ENTRY_FILE,
    FAILED,
    FINISHED,
    FOLDERS,
    ID_PATTERN,
    RECEIVING,
    RUNNING,
    STATES,
    Entry,
    StoreError,
    StoreFull,
    _chunks,
    _data_bytes,
    _tree_bytes,
    check_id,
    check_name,
)

logger = logging.getLogger(__name__)


class Staging:
    """An entry being assembled in a hidden folder (:meth:`Store.stage`); committed on success."""

    def __init__(self, store: Store, folder: Path, entry: Entry) -> None:
        self._store, self.folder, self.entry = store, folder, entry

    @property
    def input_dir(self) -> Path:
        return self.folder / "input"

    def add_file(self, name: str, source: bytes | IO[bytes], limit: int | None = None) -> Path:
        """Write one input file (bytes, or a binary stream copied in chunks), counted in the quota.

        Raises:
            StoreError: A bad name, or more than ``limit`` bytes.
            StoreFull: The quota would be exceeded (checked before each chunk is written).
        """
        return self._store._write(self.input_dir / check_name(name), source, limit)


class Store:
    """The store rooted at ``root`` (created with mode 0700).

    Args:
        root: The store folder.
        quota_bytes: Most bytes the entries may hold together; None: no limit.
        keep_hours: Finished entries older than this are removed by :meth:`expire`; None: kept.
    """

    def __init__(self, root: str | os.PathLike[str], *, quota_bytes: int | None = None,
                 keep_hours: float | None = None) -> None:
        self.root = Path(root)
        self.entries_dir = self.root / "entries"
        for folder in (self.root, self.entries_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        self.quota_bytes, self.keep_hours = quota_bytes, keep_hours
        self._lock = threading.RLock()
        self._used = sum(_data_bytes(path) for path in self.entries_dir.iterdir())

    @staticmethod
    def new_id() -> str:
        """A random entry id (144 bits, URL-safe): unguessable, and safe as a path component."""
        return secrets.token_urlsafe(18)

    @property
    def used_bytes(self) -> int:
        """Bytes held by the entries' input and output files (counted at start, kept up to date by this
        process; other processes sharing the store are seen at the next start)."""
        return self._used

    # -- creating entries ------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, kind: str, meta: dict[str, Any] | None = None, state: str = ACCEPTED,
              entry_id: str | None = None) -> Iterator[Staging]:
        """Assemble an entry in a hidden folder; on success it is renamed into place (durably).

        Yields:
            The staging area: add its input files with :meth:`Staging.add_file`. After the block,
            ``staging.entry`` is the committed entry. On an exception the folder is removed.
        """
        entry_id = check_id(entry_id or self.new_id())
        if state not in (RECEIVING, ACCEPTED):
            raise StoreError(f"an entry starts as {RECEIVING} or {ACCEPTED}, not {state!r}")
        final = self.entries_dir / entry_id
        folder = stage_dir(final)
        os.chmod(folder, 0o700)
        stamp = time.time()
        entry = Entry(entry_id, kind, state, dict(meta or {}), stamp, stamp, path=final)
        staging = Staging(self, folder, entry)
        try:
            for name in FOLDERS:
                (folder / name).mkdir(mode=0o700)
            yield staging
            for name in FOLDERS:
                fsync_dir(folder / name)
            atomic_write_json(folder / ENTRY_FILE, entry.to_dict())
            fsync_dir(folder)
            if final.exists():
                raise StoreError(f"entry {entry_id} exists already")
            os.rename(folder, final)
            fsync_dir(self.entries_dir)
        except BaseException:
            self._forget(_data_bytes(folder))
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def create(self, kind: str, meta: dict[str, Any] | None = None, state: str = RECEIVING) -> Entry:
        """A new, empty entry (the node's pending series; files come with :meth:`add_file`)."""
        with self.stage(kind, meta, state) as staging:
            pass
        return staging.entry

    def add_file(self, entry_id: str, name: str, source: bytes | IO[bytes], *, folder: str = "input",
                 limit: int | None = None) -> Path:
        """Write one file into an entry, durably (file and folder fsynced) and within the quota.

        Raises:
            StoreError: A bad id or name, an unknown entry, ``folder`` not ``input``/``output``.
            StoreFull: The quota would be exceeded.
        """
        if folder not in FOLDERS:
            raise StoreError(f"no folder {folder!r} in an entry")
        path = self._entry_path(entry_id) / folder / check_name(name)
        written = self._write(path, source, limit)
        fsync_dir(path.parent)
        return written

    def _write(self, path: Path, source: bytes | IO[bytes], limit: int | None) -> Path:
        """Atomic, fsynced write of ``source`` to ``path``; its bytes are counted in the quota."""
        old = path.stat().st_size if path.exists() else 0
        counted = 0
        try:
            with atomic_open(path, "wb") as handle:
                for chunk in _chunks(source):
                    if limit is not None and counted + len(chunk) > limit:
                        raise StoreError(f"{path.name}: more than {limit} bytes")
                    self._reserve(len(chunk))
                    counted += len(chunk)
                    handle.write(chunk)
        except BaseException:
            self._forget(counted)
            raise
        self._forget(old)  # replaced
        return path

    # -- reading ---------------------------------------------------------------------------------
    def _entry_path(self, entry_id: str) -> Path:
        path = self.entries_dir / check_id(entry_id)
        if not (path / ENTRY_FILE).is_file():
            raise StoreError(f"no entry {entry_id}")
        return path

    def get(self, entry_id: str) -> Entry:
        """The entry as stored. Raises :class:`StoreError` for a bad or unknown id."""
        path = self._entry_path(entry_id)
        try:
            data = json.loads((path / ENTRY_FILE).read_text(encoding="utf-8"))
            entry = Entry(**{k: v for k, v in data.items() if k in Entry.__dataclass_fields__}, path=path)
        except (OSError, ValueError, TypeError) as exc:
            raise StoreError(f"{path / ENTRY_FILE}: unreadable entry ({exc})") from exc
        if entry.state not in STATES or entry.id != path.name:
            raise StoreError(f"{path / ENTRY_FILE}: not a valid entry (state {entry.state!r}, id {entry.id!r})")
        return entry

    def entries(self, kind: str | None = None, states: Iterable[str] | None = None) -> Iterator[Entry]:
        """Every committed entry (by id), optionally of one kind and some states; unreadable ones are
        logged and left alone."""
        wanted = None if states is None else set(states)
        for path in sorted(self.entries_dir.iterdir()):
            if not ID_PATTERN.fullmatch(path.name) or not path.is_dir():
                continue
            try:
                entry = self.get(path.name)
            except StoreError as exc:
                logger.warning("store: %s", exc)
                continue
            if (kind is None or entry.kind == kind) and (wanted is None or entry.state in wanted):
                yield entry

    def output_path(self, entry_id: str, name: str) -> Path:
        """Where an entry's output ``name`` goes: a safe name, or ``folder/name`` (each part checked; the
        folder is created, e.g. ``statistics/<case>.json``)."""
        parts = [check_name(part) for part in _relative(name)]
        path = self._entry_path(entry_id).joinpath("output", *parts)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        return path

    # -- state changes ---------------------------------------------------------------------------
    def update(self, entry_id: str, state: str | None = None, *, meta: dict[str, Any] | None = None,
               error: str | None = None, record: dict[str, Any] | None = None) -> Entry:
        """Change an entry's state (checked against the allowed transitions) and merge ``meta``.

        Raises:
            StoreError: A transition the states do not allow (e.g. ``done`` -> ``running``).
        """
        with self._lock:
            entry = self.get(entry_id)
            if state is not None and state != entry.state:
                if state not in _NEXT.get(entry.state, set()):
                    raise StoreError(f"entry {entry_id}: cannot go from {entry.state} to {state}")
                entry.state = state
                entry.attempts += state == RUNNING
                entry.finished = time.time() if state in FINISHED else None
            entry.meta.update(meta or {})
            if error is not None or state in (ACCEPTED, RUNNING, DONE):
                entry.error = error
            if record is not None:
                entry.record = record
            entry.updated = time.time()
            self._save(entry)
            return entry

    def claim(self, entry_id: str) -> Entry | None:
        """``accepted`` -> ``running`` for one worker; None when the entry is no longer ``accepted``."""
        with self._lock:
            if self.get(entry_id).state != ACCEPTED:
                return None
            return self.update(entry_id, RUNNING)

    def finish(self, entry_id: str, outputs: Iterable[str], record: dict[str, Any] | None = None) -> Entry:
        """Mark an entry ``done`` with its output files' sizes and digests (they must exist)."""
        found: dict[str, dict[str, Any]] = {}
        for name in outputs:
            path = self.output_path(entry_id, name)
            size, digest = file_digest(path)
            found[name] = {"bytes": size, "blake2b": digest}
        for folder in {self.output_path(entry_id, name).parent for name in found}:
            fsync_dir(folder)
        with self._lock:
            entry = self.get(entry_id)
            self._used += sum(v["bytes"] for v in found.values()) - sum(
                v.get("bytes", 0) for v in entry.outputs.values())
            entry.outputs = found
            self._save(entry)
        return self.update(entry_id, DONE, record=record)

    def fail(self, entry_id: str, error: str, record: dict[str, Any] | None = None) -> Entry:
        """Mark an entry ``failed`` with its one-line error (its files are kept until it expires)."""
        return self.update(entry_id, FAILED, error=error, record=record)

    def verify(self, entry: Entry) -> str | None:
        """Why a ``done`` entry's outputs cannot be trusted (None when every one matches its record)."""
        for name, expected in entry.outputs.items():
            try:
                size, digest = file_digest(entry.output_dir.joinpath(*map(check_name, _relative(name))))
            except (OSError, StoreError) as exc:
                return f"output {name}: {exc}"
            if (size, digest) != (expected.get("bytes"), expected.get("blake2b")):
                return f"output {name} differs from its record (size or checksum)"
        return None

    def _save(self, entry: Entry) -> None:
        atomic_write_json(entry.path / ENTRY_FILE, entry.to_dict())
        fsync_dir(entry.path)

    # -- restart, expiry, removal ----------------------------------------------------------------
    def recover(self, held: Callable[[Entry], bool] = lambda _: False) -> list[Entry]:
        """After a restart: re-queue interrupted work, re-check finished outputs, sweep stale temps.

        ``running`` entries go back to ``accepted``; a ``done`` entry whose outputs are missing or
        altered goes back to ``accepted`` (its inputs are still there) or to ``failed`` (they were
        dropped). ``receiving`` entries stay as they are: the front door decides when they end.
        ``held``: True for an entry a live process sharing the store holds (service replicas): left
        as it is, not returned. Returns the ``accepted`` entries, oldest first: the work to do.
        """
        remove_stale(temp_entries(self.entries_dir))
        for entry in list(self.entries(states=(RUNNING, DONE))):
            if entry.state == RUNNING:
                if not held(entry):
                    logger.warning("store: entry %s was interrupted; it runs again", entry.id)
                    self.update(entry.id, ACCEPTED)
                continue
            distrust = self.verify(entry)
            if distrust is None:
                continue
            if any(entry.input_dir.iterdir()):
                logger.warning("store: entry %s: %s; it runs again", entry.id, distrust)
                self.update(entry.id, ACCEPTED)
            else:
                self.fail(entry.id, f"{distrust}, and its inputs are gone")
        return sorted((e for e in self.entries(states=(ACCEPTED,)) if not held(e)), key=lambda e: e.created)

    def expire(self, now: float | None = None) -> list[str]:
        """Remove finished entries older than ``keep_hours``; returns their ids."""
        if self.keep_hours is None:
            return []
        limit = (time.time() if now is None else now) - self.keep_hours * 3600.0
        gone = [e.id for e in self.entries(states=FINISHED) if (e.finished or e.updated) < limit]
        for entry_id in gone:
            self.delete(entry_id)
        return gone

    def delete(self, entry_id: str) -> None:
        """Remove an entry and its files (renamed aside first, so a half-removed entry never shows)."""
        path = self._entry_path(entry_id)
        size = _data_bytes(path)
        aside = stage_dir(path, ".deleted")
        os.replace(path, aside)
        fsync_dir(self.entries_dir)
        shutil.rmtree(aside, ignore_errors=True)
        self._forget(size)

    def drop_inputs(self, entry_id: str) -> None:
        """Remove an entry's input files (the node, once its results were acknowledged)."""
        folder = self._entry_path(entry_id) / "input"
        size = _tree_bytes(folder)
        self._empty(folder)
        self._forget(size)

    def clear_outputs(self, entry_id: str) -> None:
        """Remove whatever an earlier, interrupted run left in an entry's output folder (before a re-run).

        Outputs count in the quota from :meth:`finish` on; files a pipeline wrote before are only removed.
        """
        with self._lock:
            entry = self.get(entry_id)
            counted = sum(int(v.get("bytes", 0)) for v in entry.outputs.values())
            if entry.outputs:
                entry.outputs = {}
                self._save(entry)
        self._empty(entry.output_dir)
        self._forget(counted)

    def _empty(self, folder: Path) -> None:
        for path in list(folder.iterdir()):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        fsync_dir(folder)

    # -- the quota -------------------------------------------------------------------------------
    def _reserve(self, nbytes: int) -> None:
        with self._lock:
            if self.quota_bytes is not None and self._used + nbytes > self.quota_bytes:
                raise StoreFull(f"store {self.root} is full ({self._used} of {self.quota_bytes} bytes used); "
                                f"cannot accept {nbytes} more")
            self._used += nbytes

    def _forget(self, nbytes: int) -> None:
        with self._lock:
            self._used = max(0, self._used - nbytes)


def _relative(name: str) -> list[str]:
    """The parts of an output name: ``name`` or ``folder/name`` (deeper paths are refused)."""
    parts = str(name).split("/")
    if len(parts) > 2:
        raise StoreError(f"not a safe output name: {str(name)[:80]!r}")
    return parts

