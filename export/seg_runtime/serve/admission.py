"""The bounded job queue, the server-wide memory budget and the worker pool.

``--queue-size`` bounds the jobs this server holds (waiting or running): an upload beyond it is
answered 429 with ``Retry-After`` before anything is stored. ``--max-memory`` is one budget for the
whole server: a job reserves its estimated peak (from its headers, see
:func:`seg_runtime.limits.estimate_case_bytes`) when a worker admits it, and gives it back when it
ends, so the jobs running at once never add up past the budget; a job that does not fit waits at
the head of the queue (first come, first served: a large job is never overtaken forever) until
enough is free. ``--workers`` threads run jobs; onnxruntime releases the GIL, so several jobs use
several cores.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


class MemoryBudget:
    """Bytes reserved by running jobs, against one total.

    Args:
        total: The budget in bytes.
    """

    def __init__(self, total: int) -> None:
        self.total = int(total)
        self.reserved = 0

    def fits(self, nbytes: int) -> bool:
        """Whether ``nbytes`` fit beside what is reserved now."""
        return self.reserved + nbytes <= self.total

    def reserve(self, nbytes: int) -> None:
        if not self.fits(nbytes):
            raise RuntimeError(f"reserving {nbytes} bytes would pass the budget ({self.reserved}/{self.total})")
        self.reserved += nbytes

    def release(self, nbytes: int) -> None:
        self.reserved = max(0, self.reserved - nbytes)


@dataclass(frozen=True)
class QueuedJob:
    """A job waiting for a worker: its id and the memory it will reserve."""

    id: str
    reserve: int


class JobQueue:
    """A bounded FIFO of jobs and the threads that run them within a memory budget.

    Args:
        capacity: Jobs waiting or running at most (recovered jobs may pass it: they were accepted).
        workers: Worker threads.
        budget: The server's memory budget.
        run: Runs one job by id (never raises for a job's own failure).
    """

    def __init__(self, capacity: int, workers: int, budget: MemoryBudget, run: Callable[[str], None]) -> None:
        self.capacity, self.budget, self._run = capacity, budget, run
        self._waiting: deque[QueuedJob] = deque()
        self._running: dict[str, int] = {}
        self._lock = threading.Condition()
        self._closing = False
        self._threads = [threading.Thread(target=self._loop, name=f"seg-job-{i}", daemon=True)
                         for i in range(workers)]
        self._seconds: deque[float] = deque(maxlen=32)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    @property
    def depth(self) -> int:
        """Jobs waiting for a worker."""
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def closing(self) -> bool:
        return self._closing

    def has(self, job_id: str) -> bool:
        """Whether this server holds the job (waiting or running)."""
        with self._lock:
            return job_id in self._running or any(job.id == job_id for job in self._waiting)

    def submit(self, job: QueuedJob, *, force: bool = False) -> bool:
        """Queue a job; False when the queue is full (or closing) and ``force`` is not set."""
        with self._lock:
            if not force and (self._closing or len(self._waiting) + len(self._running) >= self.capacity):
                return False
            self._waiting.append(job)
            self._lock.notify_all()
            return True

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the queue's share of the recent job times (>= 1)."""
        with self._lock:
            mean = sum(self._seconds) / len(self._seconds) if self._seconds else 5.0
            slots = max(1, len(self._threads))
            return max(1, int(round(mean * (len(self._waiting) + 1) / slots)))

    def _next(self) -> QueuedJob | None:
        """Block until the head job fits the budget (or the queue closes); reserve its memory."""
        with self._lock:
            while True:
                if self._closing:
                    return None
                if self._waiting and (self.budget.fits(self._waiting[0].reserve) or not self._running):
                    job = self._waiting.popleft()
                    reserve = min(job.reserve, self.budget.total - self.budget.reserved)
                    self.budget.reserve(reserve)
                    self._running[job.id] = reserve
                    return job
                self._lock.wait(timeout=1.0)

    def _loop(self) -> None:
        while (job := self._next()) is not None:
            start = time.perf_counter()
            try:
                self._run(job.id)
            except Exception:  # a bug in one job must not kill the worker
                logger.exception("job %s: unexpected error", job.id)
            finally:
                with self._lock:
                    self.budget.release(self._running.pop(job.id, 0))
                    self._seconds.append(time.perf_counter() - start)
                    self._lock.notify_all()

    def drain(self) -> None:
        """Stop admitting and starting jobs at once (a stop signal); running jobs go on."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()

    def close(self, timeout: float | None = None) -> None:
        """Stop admitting; let running jobs finish (waiting ones stay in the store for the next start)."""
        self.drain()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
