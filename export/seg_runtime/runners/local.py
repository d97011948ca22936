"""The local runner: the cases one after another in this process, the next one read ahead."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..backends import Backend
from ..cases import Case
from ..extra_files import extras_record
from ..limits import MemoryBudgetError
from ..manifest import RunManifest
from ..stages import CasePipeline, Loaded, error_message, finish_case, infer_case, load_case
from . import show_case

logger = logging.getLogger(__name__)


class LocalRunner:
    """Predicts the cases in this process; a background thread reads case i+1 while case i runs.

    The memory limit bounds both together: case i+1 is read ahead with only what case i's reservation
    leaves of the limit (:func:`seg_runtime.stages.load_case`'s ``max_bytes``); one that does not fit
    beside it is read again, with the whole limit, once case i is done.

    Args:
        progress: A progress bar over the cases.
    """

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def check(self) -> None:
        """Nothing to check: this process can always run."""

    def describe(self) -> dict[str, Any]:
        return {}

    def run(self, todo: list[tuple[Case, Path]], pipeline: CasePipeline, backend: Backend,
            manifest: RunManifest) -> None:
        """The per-case loop; one bad case is recorded as failed and the loop goes on."""
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="cases", unit="case", disable=not self.progress or not todo)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="seg-prefetch") as pool:
            pending: Future[Loaded] | None = pool.submit(load_case, todo[0][0], pipeline) if todo else None
            for index, (case, target) in enumerate(todo):
                start = time.perf_counter()
                current = _settle(pending, case, pipeline)
                pending = _read_ahead(pool, todo, index + 1, pipeline, current)
                entry = run_case(current.result, case, target, pipeline, backend, manifest, start)
                current = None  # drop the finished case before the next one arrives
                show_case(entry, self.progress)
                bar.update(1)
        bar.close()


def _settle(pending: Future[Loaded], case: Case, pipeline: CasePipeline) -> Future[Loaded]:
    """The current case: what was read ahead, or, when it did not fit beside the previous case (but
    fits the whole limit), read again now that the previous case is done and dropped."""
    error = pending.exception()
    limit = pipeline.max_bytes
    if isinstance(error, MemoryBudgetError) and (limit is None or error.needed <= limit):
        return _done(load_case, case, pipeline)
    return pending


def _read_ahead(pool: ThreadPoolExecutor, todo: list[tuple[Case, Path]], index: int, pipeline: CasePipeline,
                current: Future[Loaded]) -> Future[Loaded] | None:
    """Start reading case ``index`` in the background with what the current case leaves of the limit."""
    if index >= len(todo):
        return None
    reserved = 0 if current.exception() is not None else current.result().reserved
    left = None if pipeline.max_bytes is None else max(pipeline.max_bytes - reserved, 0)
    return pool.submit(load_case, todo[index][0], pipeline, left)


def _done(function: Any, *args: Any) -> Future[Loaded]:
    """``function(*args)`` run here, as a finished future (its result or its exception)."""
    future: Future[Loaded] = Future()
    try:
        future.set_result(function(*args))
    except Exception as exc:
        future.set_exception(exc)
    return future


def run_case(load: Callable[[], Loaded], case: Case, target: Path, pipeline: CasePipeline, backend: Backend,
             manifest: RunManifest, start: float | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load (``load()``), infer and write one case; record it as ok or failed and return the record line.

    Isolation: never raises for the case. The local loop hands in its prefetched case; the DICOM node
    calls it once per series (``extra``: more fields for the record line).
    """
    start = time.perf_counter() if start is None else start
    try:
        loaded = load()
        written = finish_case(loaded, infer_case(loaded, pipeline, backend.predict_batch), case, target, pipeline)
    except Exception as exc:  # isolation: one bad case never stops the run
        message = error_message(exc)
        logger.error("case %s failed: %s", case.id, message, exc_info=logger.isEnabledFor(logging.DEBUG))
        seconds = time.perf_counter() - start
        return manifest.add(case.id, inputs=case.paths, status="failed", error=message, seconds=seconds, extra=extra,
                            identity=case.identity)
    seconds = time.perf_counter() - start
    logger.info("case %s: ok in %.2fs -> %s", case.id, seconds, target)
    extras = {"extras": extras_record(written)} if written else {}
    return manifest.add(case.id, inputs=case.paths, status="ok", output=target, seconds=seconds,
                        extra={**extras, **(extra or {})}, identity=case.identity)
