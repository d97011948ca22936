"""The run manifest: one JSON file per prediction run, rewritten atomically after every case."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ._version import __version__
from .atomic import atomic_write_text

MANIFEST_NAME = "predictions.json"
STATUSES = ("ok", "skipped", "failed")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunManifest:
    """Per-case record of a prediction run (``predictions.json`` in the output folder).

    Layout: ``{"tool", "version", "model", "started", "updated", "cases": [{"id", "inputs",
    "status", "output", "seconds", "error"}], "summary": {"ok", "skipped", "failed"}}``. The
    file is rewritten atomically after every :meth:`add`, so a killed run leaves a valid
    manifest of the cases finished so far.

    Args:
        path: The JSON file to write.
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
        self.tool = tool
        self.version = version
        self.model: dict[str, Any] = dict(model or {})
        self.started = _now()
        self.updated = self.started
        self.cases: list[dict[str, Any]] = []

    def add(
        self,
        case_id: str,
        *,
        inputs: list[str | os.PathLike[str]],
        status: str,
        output: str | os.PathLike[str] | None = None,
        seconds: float | None = None,
        error: str | None = None,
        write: bool = True,
    ) -> dict[str, Any]:
        """Record one case and (by default) rewrite the file.

        Args:
            case_id: The case id.
            inputs: The case's input paths.
            status: ``ok``, ``skipped`` or ``failed``.
            output: The label file (written or already present).
            seconds: Wall time spent on the case.
            error: The failure message (failed cases).
            write: Rewrite the manifest file now.

        Returns:
            The recorded entry.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        entry = {
            "id": case_id,
            "inputs": [str(p) for p in inputs],
            "status": status,
            "output": None if output is None else str(output),
            "seconds": None if seconds is None else round(float(seconds), 3),
            "error": error,
        }
        self.cases.append(entry)
        if write:
            self.write()
        return entry

    @property
    def summary(self) -> dict[str, int]:
        """Number of cases per status."""
        return {status: sum(1 for c in self.cases if c["status"] == status) for status in STATUSES}

    def failures(self) -> list[dict[str, Any]]:
        """The failed case entries."""
        return [c for c in self.cases if c["status"] == "failed"]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready manifest."""
        return {
            "tool": self.tool,
            "version": self.version,
            "model": self.model,
            "started": self.started,
            "updated": self.updated,
            "cases": self.cases,
            "summary": self.summary,
        }

    def write(self) -> Path:
        """Rewrite the manifest file atomically; returns its path."""
        self.updated = _now()
        atomic_write_text(self.path, json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        return self.path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RunManifest:
        """Read a manifest written by :meth:`write`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read run manifest ({exc})") from exc
        manifest = cls(
            path, tool=data.get("tool", ""), version=data.get("version", ""), model=data.get("model")
        )
        manifest.started = data.get("started", manifest.started)
        manifest.updated = data.get("updated", manifest.updated)
        manifest.cases = list(data.get("cases", []))
        return manifest
