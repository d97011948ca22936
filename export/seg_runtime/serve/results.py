"""A finished job's result files: the label map in the input's format or another, DICOM-SEG, statistics.

The statistics (``?format=json``) are ``--statistics``'s per-case JSON (:mod:`seg_runtime.statistics`):
per structure (class and region) the voxel count, the volume in ml and the input's intensities inside it.

The job writes its label map once, in the input's format (``seg-run``'s rule: NRRD in, NRRD out;
DICOM in, NIfTI out, plus DICOM-SEG when highdicom is installed). Another ``?format=`` is converted
from that file on first request (read and written with the runtime's own reader and writer, so the
geometry is the same) and kept beside it. Before a file is served, the recorded outputs are checked
against their sizes and checksums: a result is never served without the file the job recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..dicom_seg import DICOM_SEG_SUFFIX
from ..io import read_image, write_labels
from ..store import ACCEPTED, DONE, Entry, Store
from .jobs import CASE_ID, statistics_name

LABEL_FORMATS = ("nii.gz", "nrrd", "mha", "png")
MEDIA = {"nii.gz": "application/gzip", "nrrd": "application/octet-stream", "mha": "application/octet-stream",
         "png": "image/png", "seg": "application/dicom", "json": "application/json"}


class ResultError(Exception):
    """A result that cannot be served (the status and the one line to answer with)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ResultFile:
    """A file to send: its path, media type and the download name."""

    path: Path
    media_type: str
    filename: str


def label_file(entry: Entry) -> Path:
    """The label map the job wrote (in the input's format)."""
    return entry.output_dir / f"{CASE_ID}{entry.meta['case']['output_ext']}"


def native_format(entry: Entry) -> str:
    """The format of the label map the job wrote (``nii.gz``, ``nrrd``, ``mha``, ``png``)."""
    return entry.meta["case"]["output_ext"].lstrip(".")


def formats_for(entry: Entry) -> list[str]:
    """The ``?format=`` values a finished job offers, its default first."""
    found = ["seg"] if (entry.output_dir / f"{CASE_ID}{DICOM_SEG_SUFFIX}").is_file() else []
    labels = [native_format(entry)] + [f for f in LABEL_FORMATS if f != native_format(entry)]
    two_d = native_format(entry) == "png" or entry.meta.get("spatial_dims") == 2
    stats = ["json"] if statistics_name() in entry.outputs else []
    return found + [f for f in labels if f != "png" or two_d] + stats


def result_file(store: Store, entry: Entry, fmt: str | None) -> ResultFile:
    """The file answering ``GET /v1/jobs/{id}/result?format=fmt``.

    Raises:
        ResultError: 409 for a job not done (or failed: its error), 422 for an unknown format,
            500 when the recorded output is missing or altered.
    """
    if entry.state != "done":
        detail = entry.error if entry.state == "failed" else f"job {entry.id} is {entry.state}, not done"
        raise ResultError(detail or "job failed", 422 if entry.state == "failed" else 409)
    offered = formats_for(entry)
    fmt = fmt or offered[0]
    if fmt not in offered:
        raise ResultError(f"format {fmt!r} is not offered for this job (choose from {', '.join(offered)})", 422)
    distrust = store.verify(entry)
    if distrust is not None:
        raise ResultError(f"job {entry.id}: {distrust}; the result cannot be served", 500)
    name = f"{entry.id}"
    if fmt == "seg":
        return ResultFile(entry.output_dir / f"{CASE_ID}{DICOM_SEG_SUFFIX}", MEDIA[fmt], f"{name}{DICOM_SEG_SUFFIX}")
    if fmt == "json":
        return ResultFile(entry.output_dir / statistics_name(), MEDIA[fmt], f"{name}.statistics.json")
    return ResultFile(converted(entry, fmt), MEDIA[fmt], f"{name}.{fmt}")


def converted(entry: Entry, fmt: str) -> Path:
    """The label map in ``fmt``: the job's own file, or a conversion made once and kept."""
    source = label_file(entry)
    if fmt == native_format(entry):
        return source
    target = entry.output_dir / f"{CASE_ID}.{fmt}"
    if not target.is_file():
        labels, geometry = read_image(source)
        write_labels(target, labels, geometry)  # atomic: a concurrent request sees all or nothing
    return target


def describe(entry: Entry, progress: float | None = None) -> dict[str, Any]:
    """A job as ``GET /v1/jobs/{id}`` shows it."""
    state = entry.state
    if state == DONE:
        progress = 1.0
    elif state == ACCEPTED:
        progress = 0.0
    info: dict[str, Any] = {
        "id": entry.id, "model": entry.meta.get("model"), "state": state,
        "progress": None if progress is None else round(progress, 3),
        "created": entry.created, "finished": entry.finished, "error": entry.error,
        "input": {"kind": entry.meta["case"]["kind"], "format": entry.meta.get("input_format")},
    }
    if state == DONE:
        info["result"] = {"label_map": f"/v1/jobs/{entry.id}/result", "formats": formats_for(entry),
                          "statistics": f"/v1/jobs/{entry.id}/result?format=json"}
        info["seconds"] = (entry.record or {}).get("seconds")
    return info
