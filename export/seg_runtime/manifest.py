"""The run manifest: the live per-case record of a run, and the summaries written from it.

A run appends every case's outcome to ``predictions.jsonl`` as it happens (constant cost per
case, see :mod:`seg_runtime.records`) and writes ``predictions.json`` — the run's cases and
counts — when it ends. :func:`folder_summary` merges the records of every shard and every run
in a folder into the current state of each case (``seg-run --summary``, ``seg predict
--summary``). ``predictions.json`` files written before the records existed still load.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from ._version import __version__
from .atomic import atomic_path, atomic_write_text
from .errors import SegError
from .identity import output_fields
from .records import RECORD_SUFFIX, RecordWriter, iter_records, latest_states, now, record_files

MANIFEST_NAME = "predictions.json"
SUMMARY_NAME = "summary.json"
STATUSES = ("ok", "skipped", "failed")
FAILURES_KEPT = 1000  # failures held in memory for the printed summary; all are in the records


class ManifestError(SegError, ValueError):
    """A summary file that cannot be read."""


class RunManifest:
    """One prediction run's record (``predictions.jsonl``) and summary (``predictions.json``).

    :meth:`add` appends a line to the record file and updates counters; it never rewrites
    anything, so memory and time per case stay constant over 100,000 cases. :meth:`write`
    streams this run's lines into the summary file ``path``.

    Args:
        path: The summary JSON; the record file is the same name with ``.jsonl``.
        tool: Name of the program that ran (``seg-run`` or ``seg predict``).
        version: Version of that program.
        model: Free-form model description (bundle provenance, provider, ...).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        tool: str = "seg-run",
        version: str = __version__,
        model: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.records_path = self.path.with_suffix(RECORD_SUFFIX)
        self.tool = tool
        self.version = version
        self.model: dict[str, Any] = dict(model or {})
        self.started = now()
        self.updated = self.started
        self.run_id = f"{self.started}-{os.getpid()}-{secrets.token_hex(3)}"
        self.counts = dict.fromkeys(STATUSES, 0)
        self.completed = 0  # skipped cases whose missing extras this run added
        self._failures: list[dict[str, Any]] = []
        self._writer: RecordWriter | None = None
        # What made every output of this run besides its input: the model's digest, the settings.
        self.case_fields: dict[str, Any] = {}
        self._loaded_cases: list[dict[str, Any]] | None = None
        self._lock = threading.RLock()  # the DICOM node records from several threads

    def _open(self) -> RecordWriter:
        if self._writer is None:
            self._writer = RecordWriter(self.records_path)
            header = {"type": "run", "run": self.run_id, "time": self.started, "tool": self.tool,
                      "version": self.version, "model": self.model}
            self._writer.append(header)
        return self._writer

    def add(
        self,
        case_id: str,
        *,
        inputs: list[str | os.PathLike[str]],
        status: str,
        output: str | os.PathLike[str] | None = None,
        seconds: float | None = None,
        error: str | None = None,
        check: dict[str, Any] | None = None,
        identity: str | None = None,
        write: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one case's outcome to the record file.

        Args:
            case_id: The case id.
            inputs: The case's input paths.
            status: ``ok``, ``skipped`` or ``failed``.
            output: The label file (written or already present).
            seconds: Wall time spent on the case.
            error: The failure message (failed cases).
            check: The output's record of an ``ok`` case (:func:`seg_runtime.identity.output_fields`:
                bytes, modification time, sampled and full digests); computed when omitted.
            identity: The input's identity (:func:`seg_runtime.identity.input_identity`): with the
                run's :attr:`case_fields` (model, settings), what made the output.
            write: Make the line durable now (fsync). ``False`` for lines that change nothing
                (``skipped``), which are synced with the next durable line or at :meth:`close`.
            extra: More fields for the line (the DICOM node's store entry and series UID).

        Returns:
            The recorded entry.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        entry: dict[str, Any] = {
            "type": "case", "run": self.run_id, "time": now(), "id": case_id,
            "inputs": [str(p) for p in inputs], "status": status,
            "output": None if output is None else str(output),
            "seconds": None if seconds is None else round(float(seconds), 3), "error": error,
            **(extra or {}),
        }
        if identity is not None:
            entry.update(input=identity, **self.case_fields)
        if status == "ok" and output is not None:
            entry.update(check if check is not None else output_fields(output))
        with self._lock:
            self._open().append(entry, sync=write)
            self.counts[status] += 1
            self.completed += bool(entry.get("completed"))
            if status == "failed" and len(self._failures) < FAILURES_KEPT:
                self._failures.append(entry)
        return entry

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one durable line of another ``type`` than ``case`` (the DICOM node's ``received`` and
        ``sent`` objects, its ``association`` events); readers of case states skip these lines.

        Returns:
            The recorded line.
        """
        if kind in ("case", "run"):
            raise ValueError(f"event type {kind!r} is reserved")
        entry = {"type": kind, "run": self.run_id, "time": now(), **fields}
        with self._lock:
            self._open().append(entry)
        return entry

    @property
    def summary(self) -> dict[str, int]:
        """Number of cases per status in this run."""
        return dict(self.counts)

    def failures(self) -> list[dict[str, Any]]:
        """This run's failed cases (the first :data:`FAILURES_KEPT`)."""
        return list(self._failures)

    @property
    def cases(self) -> list[dict[str, Any]]:
        """This run's case entries (read back from the record file; for small runs and tests)."""
        return list(self.iter_cases())

    def iter_cases(self) -> Iterator[dict[str, Any]]:
        """This run's case entries, streamed from the record file."""
        if self._loaded_cases is not None:
            yield from self._loaded_cases
            return
        if not self.records_path.exists():
            return
        for record in iter_records(self.records_path):
            if record.get("type") == "case" and record.get("run") == self.run_id:
                yield record

    def write(self) -> Path:
        """Write the summary file (this run's cases and counts) atomically; returns its path."""
        self.updated = now()
        head = {"tool": self.tool, "version": self.version, "model": self.model, "run": self.run_id,
                "started": self.started, "updated": self.updated, "records": self.records_path.name,
                "summary": self.summary}
        with atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(head, default=str)[:-1] + ', "cases": [')
            for index, case in enumerate(self.iter_cases()):
                handle.write(("," if index else "") + "\n  " + json.dumps(case, default=str))
            handle.write("\n]}\n")
            handle.flush()
            os.fsync(handle.fileno())
        return self.path

    def close(self) -> None:
        """Sync and close the record file."""
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RunManifest:
        """Read a summary written by :meth:`write`, or an older ``predictions.json``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{path}: cannot read run manifest ({exc})") from exc
        manifest = cls(path, tool=data.get("tool", ""), version=data.get("version", ""),
                       model=data.get("model"))
        manifest.started = data.get("started", manifest.started)
        manifest.updated = data.get("updated", manifest.updated)
        manifest.run_id = data.get("run", manifest.run_id)
        manifest._loaded_cases = list(data.get("cases", []))
        for case in manifest._loaded_cases:
            if case.get("status") in STATUSES:
                manifest.counts[case["status"]] += 1
                if case["status"] == "failed" and len(manifest._failures) < FAILURES_KEPT:
                    manifest._failures.append(case)
        return manifest


def _legacy_states(folder: Path, known: set[str]) -> dict[str, dict[str, Any]]:
    """Cases of old ``predictions*.json`` files that have no record file beside them."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("predictions*.json")):
        if path.with_suffix(RECORD_SUFFIX).exists():
            continue
        try:
            legacy = RunManifest.load(path)
        except ManifestError:
            continue
        for case in legacy.iter_cases():
            if case.get("status") in ("ok", "failed") and case.get("id") not in known:
                found[str(case["id"])] = case
    return found


def folder_summary(folder: str | os.PathLike[str], *, write: bool = True) -> dict[str, Any]:
    """The current state of every case in an output folder, merged over all shards and runs.

    Each case counts once, with its newest ``ok``/``failed`` record. Written to
    ``FOLDER/summary.json`` when ``write``.

    Returns:
        ``{"folder", "updated", "record_files", "cases", "summary": {"ok", "failed"},
        "failed": [{"id", "error", "inputs"}], "runs", "seconds", "predicted"}``: the last three
        from :func:`run_times`.
    """
    folder = Path(folder)
    runs, seconds, predicted = run_times(folder)
    states = {case_id: state.record for case_id, state in latest_states(folder).items()}
    states.update(_legacy_states(folder, set(states)))
    failed = [{"id": case_id, "error": r.get("error"), "inputs": r.get("inputs")}
              for case_id, r in sorted(states.items()) if r.get("status") == "failed"]
    result = {
        "folder": str(folder), "updated": now(), "record_files": [p.name for p in record_files(folder)],
        "cases": len(states), "summary": {"ok": len(states) - len(failed), "failed": len(failed)},
        "failed": failed, "runs": runs, "seconds": round(seconds, 3), "predicted": predicted,
    }
    if write and folder.is_dir():
        atomic_write_text(folder / SUMMARY_NAME, json.dumps(result, indent=1, default=str) + "\n")
    return result


def run_times(folder: str | os.PathLike[str]) -> tuple[int, float, int]:
    """``(runs, seconds, predicted)`` over every record file of a folder: how many runs wrote to it,
    their wall time added up (each from its start to its last line), and how many cases they predicted
    (``ok`` and ``failed`` lines; skipped ones cost no prediction). Memory: one entry per run."""
    spans: dict[str, list[datetime]] = {}
    predicted = 0
    for path in record_files(folder):
        for record in iter_records(path):
            try:
                stamp = datetime.fromisoformat(str(record.get("time")))
            except ValueError:
                continue
            span = spans.setdefault(str(record.get("run")), [stamp, stamp])
            span[0], span[1] = min(span[0], stamp), max(span[1], stamp)
            predicted += record.get("type") == "case" and record.get("status") in ("ok", "failed")
    return len(spans), sum((end - start).total_seconds() for start, end in spans.values()), predicted
