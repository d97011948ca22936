"""The append-only per-case record of a prediction folder (JSON Lines, one line per event).

Every prediction run appends to ``OUTPUT/predictions.jsonl`` (one file per shard:
``predictions.shard-I-of-N.jsonl``, so parallel shards never share a file): first a ``run``
line (tool, version, model), then one ``case`` line per case as it finishes. A line is written
with a single ``write`` on an ``O_APPEND`` descriptor, then flushed and fsynced, so the cost
per case is constant however long the run, and a killed run loses at most the line it was
writing. On read, a torn or garbled line is skipped (counted, never fatal).

An ``ok`` line carries the output's size and BLAKE2b digest: a later run counts a case as done
only when the file on disk still has both (see :func:`verify_output`), so an output that was
truncated, corrupted or written by something else is predicted again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .hashing import file_digest
from .identity import sample_digest

logger = logging.getLogger(__name__)

RECORD_SUFFIX = ".jsonl"
RECORD_GLOB = "predictions*.jsonl"


def now() -> str:
    """UTC time stamp with microseconds (orders records across files)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class RecordWriter:
    """Appends JSON lines to one record file; each line is durable once :meth:`append` returns.

    Args:
        path: The ``.jsonl`` file (created if needed).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        self._heal_torn_tail()

    def _heal_torn_tail(self) -> None:
        """End a line torn by a killed writer, so the next record starts on its own line."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as handle:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                os.write(self._fd, b"\n")

    def append(self, record: dict[str, Any], *, sync: bool = True) -> None:
        """Write one record as one line (a single ``write`` call), then fsync unless not ``sync``."""
        line = (json.dumps(record, default=str, separators=(",", ":")) + "\n").encode("utf-8")
        written = os.write(self._fd, line)
        if written != len(line):  # a full disk: make the partial line a torn one, then fail
            raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes)")
        if sync:
            os.fsync(self._fd)

    def close(self) -> None:
        """Sync and close the file (appending after this fails)."""
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The records of one file in order; torn or garbled lines are skipped with a warning."""
    path = Path(path)
    skipped = 0
    with open(path, "rb") as handle:
        for raw in handle:
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                skipped += 1
                continue
            if isinstance(record, dict):
                yield record
            else:
                skipped += 1
    if skipped:
        logger.warning("%s: skipped %d unreadable line(s) (a killed writer's torn line)", path, skipped)


def record_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Every shard's record file in an output folder, sorted by name."""
    folder = Path(folder)
    return sorted(folder.glob(RECORD_GLOB)) if folder.is_dir() else []


@dataclass
class CaseState:
    """The latest known outcome of one case, merged over all record files of a folder."""

    status: str
    time: str
    record: dict[str, Any] = field(repr=False)


def latest_states(folder: str | os.PathLike[str], *, include_skipped: bool = False) -> dict[str, CaseState]:
    """Per case id, the newest ``ok`` / ``failed`` record across every shard's file.

    ``skipped`` records only repeat an earlier outcome and are ignored unless ``include_skipped``;
    the extras one added to a finished case (a rerun that completed it from its label map, see
    :mod:`seg_runtime.extra_files`) are merged into the ``ok`` record it completed. Memory: one small
    entry per case id, read once per run.
    """
    states: dict[str, CaseState] = {}
    for path in record_files(folder):
        for record in iter_records(path):
            if record.get("type") != "case" or "id" not in record:
                continue
            status = str(record.get("status"))
            stamp = str(record.get("time", ""))
            known = states.get(record["id"])
            if status == "skipped" and not include_skipped:
                if record.get("extras") and known is not None and known.status == "ok" and stamp >= known.time:
                    # Extras a later run added to this finished case (its label map re-verified then).
                    known.record = {**known.record, "extras": {**known.record.get("extras", {}), **record["extras"]}}
                continue
            if known is None or stamp >= known.time:
                states[str(record["id"])] = CaseState(status, stamp, record)
    return states


@dataclass(frozen=True)
class Expected:
    """What an output must have been made from for a rerun to keep it.

    Attributes:
        input: The case's input identity (:func:`seg_runtime.identity.input_identity`).
        model: The model's digest (``Backend.digest``).
        settings: The run's settings that change the label map (mirroring, post-processing, encoding).
    """

    input: str
    model: str
    settings: dict[str, Any]


def _made_from(record: dict[str, Any], expected: Expected) -> str | None:
    """Why the record's output was not made from ``expected`` (None when it was)."""
    if "input" not in record or "model" not in record:
        return "its record does not say what made it (written by an older version)"
    if record["input"] != expected.input:
        return "its input changed since it was made (size, time or contents)"
    if record["model"] != expected.model:
        return f"it was made by another model (sha256 {str(record['model'])[:12]}...)"
    settings = record.get("settings") or {}
    changed = sorted(k for k in set(settings) | set(expected.settings) if settings.get(k) != expected.settings.get(k))
    if changed:
        return f"it was made with other settings ({', '.join(changed)})"
    return None


def verify_output(record: dict[str, Any] | None, target: Path, expected: Expected | None = None) -> str | None:
    """Why ``target`` cannot count as this tool's finished output (None when it can).

    It can only when the newest record of its case is ``ok``, names a file of the same name, was made
    from the ``expected`` input, model and settings, and the file on disk is the one recorded: same
    size, and the same modification time and sampled digest (constant cost per case), or, when the
    time differs (a copied folder), the same full BLAKE2b digest.
    """
    if record is None:
        return "no record of a finished prediction"
    if record.get("status") != "ok" or Path(str(record.get("output", ""))).name != target.name:
        return "the last run of this case did not finish it"
    if "bytes" not in record or "blake2b" not in record:
        return "its record carries no checksum (written by an older version)"
    if expected is not None and (reason := _made_from(record, expected)):
        return reason
    try:
        stat = target.stat()
        if stat.st_size != record["bytes"]:
            return f"size {stat.st_size} differs from the recorded {record['bytes']} bytes"
        if record.get("mtime_ns") == stat.st_mtime_ns and record.get("sample"):
            if sample_digest(target, stat.st_size) != record["sample"]:
                return "its contents differ from the recorded ones"
            return None
        if file_digest(target)[1] != record["blake2b"]:
            return "its checksum differs from the recorded one"
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    return None
