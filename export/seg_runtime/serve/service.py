"""The service's state: the store, the warm models, the queue and workers, their life cycle.

One :class:`Service` per process (a uvicorn server, or one Ray Serve replica). :meth:`Service.start`
re-queues what an earlier server accepted and did not finish (:meth:`seg_runtime.store.Store.recover`),
starts the workers and the expiry of finished jobs; :meth:`Service.stop` stops admitting, lets the
running jobs finish and leaves the waiting ones in the store for the next start.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..backends import Backend
from ..limits import max_memory_bytes
from ..store import Entry, Store, StoreError
from .admission import JobQueue, MemoryBudget, QueuedJob
from .holders import Holder
from .jobs import KIND, Progress, pending, run_job
from .metrics import Metrics
from .models import ServedModel, load_models
from .security import Gate, load_tokens
from .settings import ServeSettings
from .uploads import ZipLimits

logger = logging.getLogger(__name__)

# How often finished jobs are looked at for expiry (at most; sooner for a short --keep).
_EXPIRY_EVERY_S = 300.0


def onnx_backend_factory(settings: ServeSettings) -> Callable[[Path], Backend]:
    """Builds an :class:`~seg_runtime.session.OnnxBackend` per bundle with the server's provider and threads."""

    def make(folder: Path) -> Backend:
        from ..session import OnnxBackend

        return OnnxBackend(folder, provider=settings.provider, threads=settings.threads)

    return make


def highdicom_available() -> bool:
    try:
        import highdicom  # noqa: F401
    except ImportError:
        return False
    return True


class Service:
    """Everything one server process holds.

    Args:
        settings: The checked settings.
        models: The served models by name (loaded).
        store: The job store (may be shared with other replicas on a shared file system).
    """

    def __init__(self, settings: ServeSettings, models: dict[str, ServedModel], store: Store) -> None:
        self.settings, self.models, self.store = settings, models, store
        self.tokens = None if settings.no_auth else load_tokens(settings.token_file)
        self.gate = Gate.build(settings.host, settings.allow_hosts, settings.allow_origins, settings.tls)
        self.budget = MemoryBudget(max_memory_bytes(settings.max_memory_gb))
        self.queue = JobQueue(settings.queue_size, settings.workers, self.budget, self.run)
        self.progress = Progress()
        self.metrics = Metrics(lambda: self.queue.depth, lambda: self.queue.running, lambda: self.budget.reserved)
        self.zip_limits = ZipLimits(settings.zip_max_entries, int(settings.zip_max_mb * 2**20))
        self.holder = Holder(store.root)
        self._stopping = threading.Event()
        self._watch_lock = threading.Lock()
        self._watchers: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._expiry: threading.Thread | None = None
        self.ready = False

    @classmethod
    def build(cls, settings: ServeSettings, bundles: Sequence[Path], names: Sequence[str] | None = None,
              make_backend: Callable[[Path], Backend] | None = None) -> Service:
        """Check the settings, load every model once and open the store."""
        settings.check()
        store = Store(settings.store, quota_bytes=settings.quota_bytes, keep_hours=settings.keep_hours)
        models = load_models(bundles, names, make_backend or onnx_backend_factory(settings), highdicom_available())
        return cls(settings, models, store)

    def start(self) -> None:
        """Re-queue the jobs an earlier server accepted, start the workers and the expiry."""
        recovered = pending(self.store, self._held_elsewhere)
        self.holder.sweep({entry.id for entry in self.store.entries(kind=KIND)})
        for entry in recovered:
            self.store.update(entry.id, meta={"holder": self.holder.id})  # this process runs it now
            self.queue.submit(QueuedJob(entry.id, int(entry.meta.get("reserve", 0))), force=True)
        if recovered:
            logger.warning("%d accepted job(s) from an earlier run queued again", len(recovered))
        self.queue.start()
        self._expiry = threading.Thread(target=self._expire_loop, name="seg-expiry", daemon=True)
        self._expiry.start()
        self.ready = True

    def _held_elsewhere(self, entry: Entry) -> bool:
        """Whether another live process holds the job, or took it over from a dead one first."""
        holder = entry.meta.get("holder")
        if holder == self.holder.id:
            return False
        return self.holder.alive(holder) or not self.holder.take_over(entry.id, holder)

    def stop(self, timeout: float | None = None) -> None:
        """Stop admitting; wait for the running jobs (waiting ones stay accepted in the store)."""
        self.ready = False
        self._stopping.set()
        self.queue.close(timeout)
        self.holder.close()
        logger.info("service stopped (%d job(s) left waiting in the store)", self.queue.depth)

    def run(self, job_id: str) -> None:
        """A worker's job: the stages (the metrics told just before the end is recorded), then the
        requests waiting for it woken."""
        run_job(self.store, job_id, self.models, self.progress, self.metrics.job_ended)
        with self._watch_lock:
            watchers = self._watchers.pop(job_id, [])
        for loop, event in watchers:  # wake the requests waiting for this job (?wait=)
            loop.call_soon_threadsafe(event.set)

    def watch(self, job_id: str) -> asyncio.Event:
        """An event set when this process ends the job (call in the event loop; :meth:`unwatch` after)."""
        event = asyncio.Event()
        with self._watch_lock:
            self._watchers.setdefault(job_id, []).append((asyncio.get_running_loop(), event))
        return event

    def unwatch(self, job_id: str, event: asyncio.Event) -> None:
        with self._watch_lock:
            found = [w for w in self._watchers.get(job_id, []) if w[1] is not event]
            if found:
                self._watchers[job_id] = found
            else:
                self._watchers.pop(job_id, None)

    def submit(self, entry: Entry) -> bool:
        """Queue an accepted job; False when the queue is full (the caller removes the entry: 429)."""
        return self.queue.submit(QueuedJob(entry.id, int(entry.meta.get("reserve", 0))))

    def _expire_loop(self) -> None:
        every = min(_EXPIRY_EVERY_S, max(1.0, self.settings.keep_hours * 360.0))
        while not self._stopping.wait(every):
            try:
                gone = self.store.expire()
            except (OSError, StoreError) as exc:
                logger.warning("expiry: %s", exc)
                continue
            if gone:
                logger.info("%d finished job(s) expired", len(gone))

    def jobs_of(self, owner: str) -> list[Entry]:
        """The jobs of one owner, newest first."""
        found = [e for e in self.store.entries(kind=KIND) if e.meta.get("owner") == owner]
        return sorted(found, key=lambda e: e.created, reverse=True)

    def model_info(self, model: ServedModel) -> dict[str, Any]:
        """A model as ``GET /v1/models`` lists it."""
        return {"name": model.name, "fields": model.fields, "classes": model.classes(),
                "model_json": model.description}
