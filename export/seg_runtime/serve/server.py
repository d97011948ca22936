"""Run the service on uvicorn (this process), with a graceful stop on SIGTERM / SIGINT.

On SIGTERM the queue stops admitting at once (no waiting job starts), uvicorn stops accepting
connections and lets open requests end (at most :data:`GRACE_S`), then the running jobs finish;
waiting jobs stay accepted in the store and run when a server starts on it again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .service import Service
from .settings import ServeError, ServeSettings

logger = logging.getLogger(__name__)

GRACE_S = 30
INSTALL_HINT = 'pip install "seg-runtime[serve]" (or "seg[serve]")'


def require_serve_extra() -> None:
    """FastAPI, uvicorn, python-multipart and prometheus_client must import (one line otherwise)."""
    missing = []
    for module in ("fastapi", "uvicorn", "python_multipart", "prometheus_client"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ServeError(f"seg-run serve needs {', '.join(missing)}: {INSTALL_HINT}")


def run_uvicorn(settings: ServeSettings, bundles: Sequence[Path], names: Sequence[str] | None,
                log_level: str = "warning") -> int:
    """Load the models, then serve until a signal; returns the exit status."""
    import uvicorn

    from .app import create_app

    require_serve_extra()
    service = Service.build(settings, bundles, names)
    config = uvicorn.Config(
        create_app(service), host=settings.host, port=settings.port, log_level=log_level,
        ssl_certfile=_str(settings.ssl_certfile), ssl_keyfile=_str(settings.ssl_keyfile),
        timeout_graceful_shutdown=GRACE_S, server_header=False, proxy_headers=False, lifespan="on")
    server = _server(config, service)
    scheme = "https" if settings.tls else "http"
    print(f"seg-run serve: {', '.join(service.models)} on {scheme}://{settings.host}:{settings.port}/ "
          f"(store {settings.store}); Ctrl-C or SIGTERM stops it", flush=True)
    server.run()
    return 0 if server.started else 2


def _server(config: Any, service: Service) -> Any:
    """uvicorn's server, with the job queue closed the moment a stop signal arrives."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            service.queue.drain()
            super().handle_exit(sig, frame)

    return Server(config)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
