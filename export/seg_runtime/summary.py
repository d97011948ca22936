"""The one end-of-run summary of both CLIs: ``seg-run``, ``seg predict`` and their ``--summary``.

Two columns, a label and its value; the totals first (cases by outcome, wall time and cases per
second), then where things are, then the first failures with their one-line errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .manifest import SUMMARY_NAME, RunManifest

_SHOWN_FAILURES = 10


def _rows(rows: list[tuple[str, Any]]) -> list[str]:
    return [f"{label:<10}{value}" for label, value in rows]


def _counts(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    return f"{total}: " + ", ".join(f"{counts[status]} {status}" for status in counts)


def _failure_lines(failures: list[dict[str, Any]], total: int, where: str) -> list[str]:
    """The first failures, one line each, and how many more ``where`` lists."""
    lines = [f"  failed {entry['id']}: {entry['error']}" for entry in failures[:_SHOWN_FAILURES]]
    if total > _SHOWN_FAILURES:
        lines.append(f"  ... and {total - _SHOWN_FAILURES} more (see {where})")
    return lines


def _time(seconds: float, predicted: int, runs: int = 1) -> str:
    """``12.3 s (0.325 cases/s)``; ``in 2 runs`` for a folder several runs wrote."""
    rate = f"{predicted / seconds:.3g} cases/s" if seconds > 0 and predicted else "nothing predicted"
    return f"{seconds:.1f} s" + (f" in {runs} runs" if runs > 1 else "") + f" ({rate})"


def run_summary(manifest: RunManifest, output: Path, seconds: float) -> str:
    """The summary of one run: counts, time and throughput, the model's digest, output folder and records."""
    counts = manifest.summary
    rows = [("cases", _counts(counts)), ("time", _time(seconds, counts["ok"] + counts["failed"]))]
    if manifest.completed:
        rows.append(("extras", f"added to {manifest.completed} skipped case(s) from their label maps"))
    if manifest.model.get("sha256"):
        rows.append(("model", f"sha256 {manifest.model['sha256']}"))
    lines = _rows([*rows, ("output", output), ("records", manifest.records_path), ("summary", manifest.path)])
    return "\n".join(lines + _failure_lines(manifest.failures(), counts["failed"], manifest.records_path.name))


def folder_summary_text(result: dict[str, Any], output: Path) -> str:
    """The merged state of an output folder (:func:`seg_runtime.manifest.folder_summary`), in the rows of
    :func:`run_summary`: its time is that of every run that wrote to the folder, added up."""
    counts = result["summary"]
    records = ", ".join(result["record_files"]) or "(predictions.json only)"
    time = _time(result.get("seconds", 0.0), result.get("predicted", 0), result.get("runs", 1))
    lines = _rows([("cases", _counts(counts)), ("time", time), ("output", output), ("records", records),
                   ("summary", output / SUMMARY_NAME)])
    return "\n".join(lines + _failure_lines(result["failed"], counts["failed"], SUMMARY_NAME))
