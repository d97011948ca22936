"""Jobs: entries of kind ``job`` in the one store of accepted work (:mod:`seg_runtime.store`).

An upload becomes an entry only once every file is in the store and fsynced (the 202 comes after
:meth:`~seg_runtime.store.Store.stage` returns); a refused upload leaves nothing behind. A job's
entry holds the model's name, its owner (the hash of the token that made it), the case's files
(server-chosen names) and the memory it will reserve. Running it is the three stages of
``seg-run`` (:func:`~seg_runtime.stages.load_case`, :func:`~seg_runtime.stages.infer_case`,
:func:`~seg_runtime.stages.finish_case`) with the model's warm backend, so its label map is the
file ``seg-run`` writes for the same input.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cases import Case
from ..dicom_seg import DICOM_SEG_SUFFIX
from ..geometry import CaseError
from ..limits import check_memory, estimate_case_bytes
from ..probe import probe_case
from ..stages import error_message, finish_case, infer_case, load_case
from ..statistics import statistics_path
from ..store import Entry, Store, StoreError
from ..tiling import patch_grid
from .models import ServedModel

logger = logging.getLogger(__name__)

KIND = "job"
CASE_ID = "labels"  # the label map is output/labels<ext>, its DICOM-SEG output/labels.seg.dcm


@dataclass(frozen=True)
class Owner:
    """Who may see a job: the owner id of the caller's token (see :func:`~.security.owner_id`)."""

    id: str


def public(message: str, folder: Path) -> str:
    """``message`` without the store's paths: files by their upload names, the series as such.

    A client never learns where the server keeps its files; ``input/file.nii.gz: truncated...``
    becomes ``file.nii.gz: truncated...``.
    """
    return message.replace(f"{folder}{os.sep}", "").replace(str(folder), "the uploaded DICOM series")


def job_case(entry: Entry) -> Case:
    """The case a job's entry holds (its files are in the entry's ``input`` folder)."""
    case = entry.meta["case"]
    if case["kind"] == "dicom":
        return Case(CASE_ID, [entry.input_dir], "dicom", case["output_ext"])
    return Case(CASE_ID, [entry.input_dir / name for name in case["files"]], case["kind"], case["output_ext"])


def estimate(case: Case, model: ServedModel, limit: int) -> int:
    """The memory a job will reserve, from its headers; over ``limit`` it is refused.

    Raises:
        CaseError: An unreadable header, a case the model cannot take, or a job over the budget
            (the message names the file and says how much it needs).
    """
    bundle = model.bundle
    header = probe_case(case, bundle.spatial_dims, bundle.in_channels)
    shape = header.shape[:2] if bundle.spatial_dims == 2 else header.shape
    grid = model.pipeline.preprocessor.grid_shape(tuple(shape), header.geometry)
    need = estimate_case_bytes(header.voxels, header.channels, header.itemsize, grid, bundle.output_channels)
    check_memory(case.paths[0], "this job (input, model grid and restored scores)", grid, need, limit)
    return need


def owned(store: Store, job_id: str, owner: Owner) -> Entry | None:
    """The job ``job_id`` if it exists and belongs to ``owner``; None otherwise (the same answer for both)."""
    try:
        entry = store.get(job_id)
    except StoreError:
        return None
    if entry.kind != KIND or entry.meta.get("owner") != owner.id:
        return None
    return entry


class Progress:
    """Fine-grained progress of the jobs this process runs (patch batches done / expected)."""

    def __init__(self) -> None:
        self._done: dict[str, float] = {}

    def get(self, job_id: str) -> float | None:
        return self._done.get(job_id)

    def set(self, job_id: str, fraction: float) -> None:
        self._done[job_id] = fraction

    def drop(self, job_id: str) -> None:
        self._done.pop(job_id, None)


def run_job(store: Store, job_id: str, models: dict[str, ServedModel], progress: Progress,
            on_outcome: Callable[[str, str, float, str | None], None] | None = None) -> Entry | None:
    """Run one accepted job: claim it, run the three stages, record the outputs (or the failure).

    One job's failure is recorded on the job (its one-line error), never raised.

    Args:
        store: The job store.
        job_id: The job.
        models: The served models by name.
        progress: Where the job's progress is kept while it runs.
        on_outcome: Told ``(model, "done" | "failed", seconds, error)`` just before the job's end is
            recorded (so whoever sees the job ended also finds it in the metrics).

    Returns:
        The job as recorded at its end; None when it was not run (gone, or claimed elsewhere).
    """
    try:
        entry = store.claim(job_id)
    except StoreError:
        entry = None  # deleted while it waited
    if entry is None:
        return None
    start, name = time.perf_counter(), str(entry.meta.get("model", ""))
    report = _once(on_outcome)
    progress.set(job_id, 0.0)
    try:
        model = models.get(name)
        if model is None:
            raise CaseError(f"model {name!r} is not served by this server")
        outputs = _predict(entry, model, lambda f: progress.set(job_id, f))
        seconds = time.perf_counter() - start
        report(name, "done", seconds, None)
        logger.info("job %s: done in %.2fs", job_id, seconds)
        return store.finish(job_id, outputs, record={"status": "ok", "seconds": round(seconds, 3)})
    except StoreError as exc:  # deleted while it ran
        logger.info("job %s: %s", job_id, exc)
        return None
    except Exception as exc:  # isolation: the job fails, the server goes on
        message = public(error_message(exc), entry.input_dir)
        logger.warning("job %s failed: %s", job_id, message, exc_info=logger.isEnabledFor(logging.DEBUG))
        seconds = time.perf_counter() - start
        report(name, "failed", seconds, message)
        return _fail(store, job_id, message, seconds)
    finally:
        progress.drop(job_id)


def _once(callback: Callable[..., None] | None) -> Callable[..., None]:
    """``callback``, called at most once (a failure while recording a success is not a second end)."""
    called = False

    def once(*args: Any) -> None:
        nonlocal called
        if callback is not None and not called:
            called = True
            callback(*args)

    return once


def _fail(store: Store, job_id: str, message: str, seconds: float) -> Entry | None:
    try:
        return store.fail(job_id, message, record={"status": "failed", "seconds": round(seconds, 3)})
    except StoreError as exc:  # deleted while it ran
        logger.info("job %s: %s", job_id, exc)
        return None


def _predict(entry: Entry, model: ServedModel, report: Callable[[float], None]) -> list[str]:
    """The three stages into the entry's output folder; returns the output file names."""
    case = job_case(entry)
    # DICOM-SEG only for DICOM inputs (the model's pipeline asks for it wherever highdicom is installed).
    pipeline = model.pipeline if case.kind == "dicom" else dataclasses.replace(model.pipeline, dicom_seg=False)
    target = entry.output_dir / f"{CASE_ID}{case.output_ext}"
    loaded = load_case(case, pipeline)
    report(0.05)
    predict_batch = _counting(model.backend.predict_batch, _expected_calls(loaded.image.shape[1:], pipeline),
                              lambda f: report(0.05 + 0.85 * f))
    scores = infer_case(loaded, pipeline, predict_batch)
    report(0.9)
    finish_case(loaded, scores, case, target, pipeline)
    extras = [f"{CASE_ID}{DICOM_SEG_SUFFIX}", statistics_name()]
    return [target.name] + [name for name in extras if (entry.output_dir / name).is_file()]


def statistics_name() -> str:
    """The job's statistics file, relative to its output folder (``statistics/labels.json``)."""
    return statistics_path(".", CASE_ID).as_posix().removeprefix("./")


def _expected_calls(shape: tuple[int, ...], pipeline: Any) -> int:
    bundle = pipeline.bundle
    padded = [max(s, p) for s, p in zip(shape, bundle.patch_size)]
    windows = len(patch_grid(padded, bundle.patch_size, bundle.overlap))
    flips = 2 ** len(pipeline.mirror_axes or ())
    return max(1, math.ceil(windows / max(1, pipeline.batch_size)) * flips)


def _counting(predict_batch: Callable, expected: int, report: Callable[[float], None]) -> Callable:
    calls = 0

    def counted(x: Any) -> Any:
        nonlocal calls
        result = predict_batch(x)
        calls += 1
        report(min(1.0, calls / expected))
        return result

    return counted


def pending(store: Store, held: Callable[[Entry], bool]) -> list[Entry]:
    """After a restart: the accepted jobs to run again, oldest first (see :meth:`Store.recover`).

    Args:
        store: The job store.
        held: True for a job a live process sharing the store holds (it is left to that process).
    """
    return [entry for entry in store.recover(held) if entry.kind == KIND]
