"""The optional per-case outputs beside a label map, where they go, and whether a rerun must make them.

A run that asks for an extra (``--save-probabilities``, ``--statistics``, ``--preview``,
``--dicom-seg``, ``--rtstruct``) records, in each case's line, the quick check of every extra it
wrote (``"extras": {name: {"file", "bytes", "mtime_ns", "sample"}}``). A rerun that asks for an extra
a finished case lacks (no file, or not the one recorded) makes it for that case: from the label map
already on disk when the record proves it current (everything but the probabilities, which only the
network gives), else by predicting the case again (:mod:`seg_runtime.planning`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .dicom_seg import DICOM_SEG_SUFFIX
from .identity import quick_check, sample_digest
from .preview import preview_path
from .rtstruct import RTSTRUCT_SUFFIX
from .statistics import statistics_path

# In the order a case writes them; the pipeline's attribute of the same name asks for each.
EXTRAS = ("save_probabilities", "statistics", "preview", "dicom_seg", "rtstruct")
# What a label map on disk is enough for (the rest needs the network's scores).
FROM_LABEL_MAP = ("statistics", "preview", "dicom_seg", "rtstruct")
DICOM_ONLY = ("dicom_seg", "rtstruct")


def extra_path(name: str, output: str | os.PathLike[str], case_id: str, spatial_dims: int) -> Path:
    """Where extra ``name`` of a case goes in the output folder."""
    output = Path(output)
    if name == "save_probabilities":
        return output / f"{case_id}_probabilities{'.npz' if spatial_dims == 2 else '.nii.gz'}"
    if name == "statistics":
        return statistics_path(output, case_id)
    if name == "preview":
        return preview_path(output, case_id)
    if name == "dicom_seg":
        return output / f"{case_id}{DICOM_SEG_SUFFIX}"
    if name == "rtstruct":
        return output / f"{case_id}{RTSTRUCT_SUFFIX}"
    raise ValueError(f"unknown extra output {name!r} (expected one of {', '.join(EXTRAS)})")


def requested_extras(settings: Any, case_kind: str) -> list[str]:
    """The extras ``settings`` (a pipeline or options object) asks for that apply to a case of this kind."""
    return [name for name in EXTRAS if getattr(settings, name, False)
            and (case_kind == "dicom" or name not in DICOM_ONLY)]


def extras_record(written: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    """The ``extras`` field of a case's record line: each written file's name and quick check."""
    return {name: {"file": Path(path).name, **quick_check(path)} for name, path in written.items()}


def missing_extras(record: Mapping[str, Any] | None, paths: Mapping[str, Path]) -> list[str]:
    """The extras in ``paths`` (name -> where it must be) that the record does not prove present: no
    file, no record of it, or a file that is not the recorded one (size, time and sampled digest)."""
    recorded = (record or {}).get("extras") or {}
    return [name for name, path in paths.items() if not _is_recorded(recorded.get(name), path)]


def _is_recorded(entry: Mapping[str, Any] | None, path: Path) -> bool:
    if not entry or entry.get("file") != path.name:
        return False
    try:
        stat = path.stat()
        return (stat.st_size == entry.get("bytes") and stat.st_mtime_ns == entry.get("mtime_ns")
                and sample_digest(path, stat.st_size) == entry.get("sample"))
    except OSError:
        return False


def describe(names: Iterable[str]) -> str:
    """``probabilities, preview``: extras as the options spell them, for messages."""
    return ", ".join(name.removeprefix("save_") for name in names)
