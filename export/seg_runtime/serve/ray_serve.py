"""``seg-run serve --engine ray``: the same application as a Ray Serve deployment.

Each replica is one :class:`~.service.Service` (its own warm models, queue and workers) behind Ray
Serve's HTTP proxy; ``--replicas N`` fixes their number, ``--min-replicas``/``--max-replicas`` let
Ray Serve scale on the requests in flight. Replicas share the job store, so the store must be on a
file system every node sees (NFS, a cluster file system): any replica answers for any job, and a
replica that starts re-queues the work of replicas that died (a live replica's jobs are never taken
from it: each replica holds a lock the store checks, see :meth:`seg_runtime.store.Store.recover`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SegError
from .settings import ServeSettings

logger = logging.getLogger(__name__)

APP_NAME = "seg"
_GRACE_S = 60.0


class RayServeUnavailable(SegError):
    """``--engine ray`` without Ray Serve installed, or no cluster at the given address."""


@dataclass(frozen=True)
class RayServeOptions:
    """Where and how wide the deployment runs.

    Attributes:
        address: None starts Ray here; ``auto`` joins this machine's cluster; ``ray://HEAD:10001``.
        replicas: Fixed replica count (unless autoscaling bounds are given).
        min_replicas, max_replicas: Autoscaling bounds.
        cpus, gpus: Resources per replica (fractional GPUs share a device).
    """

    address: str | None = None
    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    cpus: float = 1.0
    gpus: float = 0.0

    def scaling(self) -> dict[str, Any]:
        """``num_replicas`` or an ``autoscaling_config`` for :func:`ray.serve.deployment`."""
        if self.max_replicas is None:
            if self.min_replicas is not None:
                raise RayServeUnavailable("--min-replicas needs --max-replicas")
            return {"num_replicas": self.replicas}
        low = self.min_replicas if self.min_replicas is not None else 1
        if not 0 <= low <= self.max_replicas:
            raise RayServeUnavailable(f"need 0 <= --min-replicas <= --max-replicas, got {low} and {self.max_replicas}")
        return {"autoscaling_config": {"min_replicas": low, "max_replicas": self.max_replicas,
                                       "initial_replicas": max(low, 1), "target_ongoing_requests": 2}}


def require_ray_serve() -> Any:
    """Import Ray Serve, or fail in one line naming the extra."""
    try:
        import ray
        from ray import serve  # noqa: F401
    except ImportError as exc:
        raise RayServeUnavailable(f"--engine ray needs Ray Serve ({exc.name or exc}): "
                                  'pip install "seg-runtime[serve-ray]" (or "seg[serve]")') from None
    return ray


class SegReplica:
    """One replica: builds its :class:`~.service.Service` (models loaded once) and the app over it.

    Ray Serve builds the ASGI app after the constructor (``__serve_build_asgi_app__``), so the app's
    routes see this replica's service.
    """

    def __init__(self, settings: ServeSettings, bundles: list[str], names: list[str] | None) -> None:
        from .service import Service

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        self.service = Service.build(settings, [Path(b) for b in bundles], names)
        self.service.start()

    def __serve_build_asgi_app__(self) -> Any:
        from .app import create_app

        return create_app(self.service, manage_lifecycle=False)

    def check_health(self) -> None:
        """Ray Serve's health check: a replica that stopped admitting is unhealthy."""
        if self.service.queue.closing:
            raise RuntimeError("replica is stopping")

    def __del__(self) -> None:
        service = getattr(self, "service", None)
        if service is not None:
            service.stop(timeout=_GRACE_S)


def deployment(settings: ServeSettings, bundles: Sequence[Path], names: Sequence[str] | None,
               options: RayServeOptions) -> Any:
    """The bound Ray Serve application (``serve.run`` it)."""
    require_ray_serve()
    from ray import serve

    replica = serve.ingress()(SegReplica)
    actor = {"num_cpus": options.cpus, **({"num_gpus": options.gpus} if options.gpus else {})}
    built = serve.deployment(replica, name="seg", ray_actor_options=actor, graceful_shutdown_timeout_s=_GRACE_S,
                             max_ongoing_requests=max(8, settings.queue_size * 2), **options.scaling())
    resolved = [str(Path(b).resolve()) for b in bundles]
    return built.bind(settings, resolved, list(names) if names else None)


def start(settings: ServeSettings, bundles: Sequence[Path], names: Sequence[str] | None,
          options: RayServeOptions) -> Any:
    """Connect to (or start) Ray, start Serve's proxy on ``settings.host:port`` and deploy the app."""
    ray = require_ray_serve()
    from ray import serve

    settings.check()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                                  "log_to_driver": False}
        if options.address is not None:
            kwargs["address"] = options.address
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayServeUnavailable(f"cannot reach the Ray cluster at {options.address!r}: {exc}") from None
    http = {"host": settings.host, "port": settings.port}
    if settings.tls:
        http.update(ssl_certfile=str(settings.ssl_certfile), ssl_keyfile=str(settings.ssl_keyfile))
    serve.start(http_options=http)
    return serve.run(deployment(settings, bundles, names, options), name=APP_NAME, route_prefix="/")


def run_ray_serve(settings: ServeSettings, bundles: Sequence[Path], names: Sequence[str] | None,
                  options: RayServeOptions) -> int:
    """Deploy, then wait for SIGTERM / SIGINT and take the deployment down (replicas drain first)."""
    from ray import serve

    start(settings, bundles, names, options)
    scheme = "https" if settings.tls else "http"
    print(f"seg-run serve: Ray Serve on {scheme}://{settings.host}:{settings.port}/ "
          f"({options.scaling()}); Ctrl-C or SIGTERM stops it", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.delete(APP_NAME)
    serve.shutdown()
    return 0
