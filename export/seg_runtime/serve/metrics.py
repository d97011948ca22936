"""``/metrics`` in Prometheus' text format (prometheus_client, one registry per app)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Job latency buckets (seconds): a 2D slice takes milliseconds, a CT volume on a CPU minutes.
BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class Metrics:
    """The service's metrics.

    Attributes:
        queue_depth: Jobs waiting for a worker (read when scraped).
        running: Jobs running (read when scraped).
        memory_reserved: Bytes of ``--max-memory`` reserved by running jobs.
        job_seconds: Histogram of job time (claim to done/failed), by model and outcome.
        failures: Failed jobs and refused uploads, by reason.
        uploads: Uploads by outcome (accepted, refused, busy).
    """

    def __init__(self, depth: Callable[[], float], running: Callable[[], float],
                 reserved: Callable[[], float]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        gauge = Gauge("seg_queue_depth", "Jobs waiting for a worker", registry=self.registry)
        gauge.set_function(depth)
        gauge = Gauge("seg_jobs_running", "Jobs running", registry=self.registry)
        gauge.set_function(running)
        gauge = Gauge("seg_memory_reserved_bytes", "Memory reserved by running jobs", registry=self.registry)
        gauge.set_function(reserved)
        self.job_seconds = Histogram("seg_job_seconds", "Job time from start to end", ["model", "outcome"],
                                     buckets=BUCKETS, registry=self.registry)
        self.failures = Counter("seg_failures", "Failed jobs and refused requests by reason", ["reason"],
                                registry=self.registry)
        self.uploads = Counter("seg_uploads", "Uploads by outcome", ["outcome"], registry=self.registry)

    def job_ended(self, model: str, state: str, seconds: float, error: str | None) -> None:
        """Record a job's end (its time, and its failure's reason)."""
        self.job_seconds.labels(model=model, outcome=state).observe(seconds)
        if state == "failed":
            self.failures.labels(reason=failure_reason(error)).inc()

    def refused(self, status: int) -> None:
        """Record a refused request by its status (``http_413``, ...)."""
        self.failures.labels(reason=f"http_{status}").inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def failure_reason(error: Any) -> str:
    """A short reason label for a job's error (bounded set: never the message itself)."""
    text = str(error or "").lower()
    for needle, reason in (("memory limit", "memory"), ("nan or inf", "bad_values"), ("truncated", "corrupt"),
                           ("corrupt", "corrupt"), ("cannot read", "unreadable"), ("unreadable", "unreadable"),
                           ("channel", "channels"), ("dicom", "dicom"), ("is 2d", "dimensions"),
                           ("is 3d", "dimensions")):
        if needle in text:
            return reason
    return "other"
