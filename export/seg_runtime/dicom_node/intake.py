"""Received instances into pending series: the DICOM node's front door to the store.

Each instance is written into its series' ``receiving`` entry (named by its validated
SOPInstanceUID, atomically, fsynced) before its C-STORE is answered. A series is complete when no
instance has arrived for ``timeout_s`` and every association that delivered to it has ended (or, for
a peer that keeps its association open, after :data:`OPEN_ASSOCIATION_FACTOR` times ``timeout_s``);
it then becomes ``accepted`` and is handed on. Every
instance is recorded, whatever happens to it:

- ``stored``; ``duplicate`` (the same bytes again: acknowledged, nothing changes);
- ``skipped``: localizers, multi-frame objects and non-images never enter a series' volume;
- ``refused``: an invalid UID; the store's quota, an instance that disagrees with its series on
  PatientID / StudyInstanceUID / FrameOfReferenceUID or repeats a stored instance with other content
  (for these three the series is refused as a whole when it closes, its data kept);
- an instance of a series that was already closed starts a new, recorded run of that series (never
  merged silently into the finished one).

An association that ends in an abort marks the series it delivered to as interrupted; unless a later
association delivers to that series and is released normally, the series fails when it closes
("send it again"), its data kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..manifest import RunManifest
from ..readers.dicom import left_out
from ..store import ACCEPTED, RECEIVING, Store, StoreError, StoreFull
from .peers import valid_uid

logger = logging.getLogger(__name__)

SERIES_KEYS = ("SeriesInstanceUID", "StudyInstanceUID", "PatientID", "FrameOfReferenceUID", "Modality",
               "SeriesDescription", "BodyPartExamined", "ProtocolName", "Manufacturer", "StationName")
IDENTITY = ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID")
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND, IDENTITY_CONFLICT, CONTENT_CONFLICT = (
    0x0000, 0xA700, 0xC000, 0xC001, 0xC002)
# A series whose association is still open waits this many times the series timeout before it closes:
# the peer may still be sending, and an abort (or a crash) must be seen before the series is judged.
OPEN_ASSOCIATION_FACTOR = 10


@dataclass(frozen=True)
class Source:
    """Where an instance came from."""

    calling_ae: str
    address: str
    association: int


@dataclass
class Pending:
    """A series still receiving instances."""

    entry_id: str
    header: dict[str, str]
    case: str
    last: float
    instances: int = 0
    interrupted: bool = False
    conflict: str | None = None
    associations: set[int] = field(default_factory=set)


class Intake:
    """Pending series in the store; thread-safe (pynetdicom answers each association in its own thread).

    Args:
        store: The store of accepted work.
        manifest: The node's run record (``received`` lines).
        timeout_s: A series is complete after this long without a new instance.
        on_closed: Called with the entry id of each series that closes.
    """

    def __init__(self, store: Store, manifest: RunManifest, timeout_s: float,
                 on_closed: Callable[[str], None]) -> None:
        self.store, self.manifest, self.timeout_s, self.on_closed = store, manifest, timeout_s, on_closed
        self._lock = threading.Lock()
        self._open: dict[str, Pending] = {}
        self._runs: dict[str, int] = {}  # series UID -> runs started (closed or open)
        self._live: set[int] = set()  # associations that delivered an instance and have not ended

    def resume(self) -> None:
        """After a restart: every ``receiving`` entry is a pending series again (its clock restarts)."""
        for entry in sorted(self.store.entries(kind="series"), key=lambda e: e.created):
            uid = str(entry.meta.get("SeriesInstanceUID", ""))
            self._runs[uid] = self._runs.get(uid, 0) + 1
            if entry.state == RECEIVING:
                count = sum(1 for _ in entry.input_dir.iterdir())
                self._open[uid] = Pending(entry.id, dict(entry.meta.get("header", {})), str(entry.meta["case"]),
                                          time.time(), count, bool(entry.meta.get("interrupted")),
                                          entry.meta.get("conflict"))
        if self._open:
            logger.info("resuming %d pending series", len(self._open))

    # -- receiving --------------------------------------------------------------------------------
    def receive(self, dataset: Any, encoded: bytes, source: Source) -> int:
        """Store one instance (C-STORE); returns the DIMSE status to answer with."""
        sop = str(dataset.get("SOPInstanceUID", ""))
        header = {key: str(dataset.get(key, "") or "") for key in SERIES_KEYS}
        uid = header["SeriesInstanceUID"]
        base = {"sop": sop[:80], "series": uid[:80], "calling_ae": source.calling_ae, "address": source.address}
        bad = [k for k, v in (("SOPInstanceUID", sop), ("SeriesInstanceUID", uid),
                              ("StudyInstanceUID", header["StudyInstanceUID"])) if not valid_uid(v)]
        if bad:
            return self._record(base, "refused", CANNOT_UNDERSTAND, f"not a valid UID: {', '.join(bad)}")
        reason = left_out(dataset) or (None if "Rows" in dataset else "not an image (no Rows)")
        if reason:
            return self._record(base, "skipped", SUCCESS, reason)
        with self._lock:
            pending = self._pending(uid, header)
            base["entry"] = pending.entry_id
            conflict = next((f"{k} {header[k]!r} differs from the series' {pending.header[k]!r}"
                             for k in IDENTITY if header[k] != pending.header[k]), None)
            if conflict:
                pending.conflict = pending.conflict or f"instances disagree: {conflict}"
                return self._record(base, "refused", IDENTITY_CONFLICT, conflict)
            return self._write(pending, sop, encoded, source, base)

    def _write(self, pending: Pending, sop: str, encoded: bytes, source: Source, base: dict[str, Any]) -> int:
        name = f"{sop}.dcm"
        path = self.store.get(pending.entry_id).input_dir / name
        if path.exists():
            if path.read_bytes() == encoded:
                pending.last = time.time()
                return self._record(base, "duplicate", SUCCESS, "the same instance again")
            pending.conflict = pending.conflict or f"instance {sop} received twice with different content"
            return self._record(base, "refused", CONTENT_CONFLICT, "received before with different content")
        try:
            self.store.add_file(pending.entry_id, name, encoded)
        except (StoreError, OSError) as exc:  # the quota (StoreFull), a full disk: the series is incomplete
            reason = str(exc) if isinstance(exc, StoreFull) else f"cannot store it: {exc}"
            pending.conflict = pending.conflict or f"incomplete: an instance could not be stored ({reason})"
            return self._record(base, "refused", OUT_OF_RESOURCES, reason)
        pending.instances += 1
        pending.last = time.time()
        pending.associations.add(source.association)
        self._live.add(source.association)
        return self._record(base, "stored", SUCCESS, None)

    def _pending(self, uid: str, header: dict[str, str]) -> Pending:
        """The open series ``uid``, or a new entry for it (a later run when it was closed before)."""
        pending = self._open.get(uid)
        if pending is not None:
            return pending
        run = self._runs.get(uid, 0) + 1
        case = uid if run == 1 else f"{uid}-{run}"
        meta = {"SeriesInstanceUID": uid, "header": header, "case": case, "run": run}
        entry = self.store.create("series", meta)
        if run > 1:
            logger.warning("series %s: an instance after the series was closed; a new run (%s)", uid, case)
            self.manifest.event("series", entry=entry.id, series=uid, case=case, status="late",
                                reason=f"instances after run {run - 1} was closed: a new run")
        self._runs[uid] = run
        self._open[uid] = Pending(entry.id, header, case, time.time())
        return self._open[uid]

    def _record(self, base: dict[str, Any], status: str, code: int, reason: str | None) -> int:
        if status == "refused":
            logger.warning("instance %s of series %s from %s refused: %s", base["sop"], base["series"],
                           base["calling_ae"], reason)
        self.manifest.event("received", **base, status=status, dimse=f"0x{code:04X}", reason=reason)
        return code

    # -- associations and closing -----------------------------------------------------------------
    def association_ended(self, association: int, aborted: bool) -> None:
        """Mark (abort) or clear (release) the interruption of the series an association delivered to."""
        with self._lock:
            self._live.discard(association)
            for pending in self._open.values():
                if association in pending.associations and pending.interrupted != aborted:
                    pending.interrupted = aborted
                    self.store.update(pending.entry_id, meta={"interrupted": aborted})  # survives a restart
                    if aborted:
                        logger.warning("series %s: the peer disconnected mid-series after %d instance(s)",
                                       pending.header["SeriesInstanceUID"], pending.instances)

    def close_due(self, now: float | None = None) -> list[str]:
        """Close every series quiet for ``timeout_s``; returns their entry ids."""
        now = time.time() if now is None else now
        with self._lock:  # handed on inside the lock: a closed series is never neither pending nor queued
            due = [uid for uid, p in self._open.items() if self._is_due(p, now)]
            closed = [self._close(uid) for uid in due]
            for entry_id in closed:
                self.on_closed(entry_id)
        return closed

    def _is_due(self, pending: Pending, now: float) -> bool:
        quiet = now - pending.last
        if pending.associations & self._live:  # its peer is still connected (or its end not yet seen)
            return quiet >= OPEN_ASSOCIATION_FACTOR * self.timeout_s
        return quiet >= self.timeout_s

    def close_all(self) -> list[str]:
        """Close every pending series now (a finished C-GET/C-MOVE)."""
        return self.close_due(now=float("inf"))

    def _close(self, uid: str) -> str:
        pending = self._open.pop(uid)
        meta = {"instances": pending.instances, "interrupted": pending.interrupted, "conflict": pending.conflict}
        self.store.update(pending.entry_id, ACCEPTED, meta=meta)
        self.manifest.event("series", entry=pending.entry_id, series=uid, case=pending.case, status="complete",
                            instances=pending.instances)
        return pending.entry_id

    @property
    def pending(self) -> int:
        """Series still receiving."""
        with self._lock:
            return len(self._open)
