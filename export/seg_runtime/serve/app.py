"""The HTTP API and the web page: a FastAPI application over one :class:`~.service.Service`.

::

    GET    /                          the web page (upload, watch, look at the result)
    GET    /healthz, /readyz          alive; models loaded and admitting
    GET    /metrics                   Prometheus text (token required)
    GET    /v1/models                 the served models with their model.json
    POST   /v1/models/{name}/jobs     one case as multipart form data -> 202 {"id": ...} (?wait=S)
    GET    /v1/jobs                   the caller's jobs
    GET    /v1/jobs/{id}              state and progress (?wait=S: until it ends, at most S seconds)
    GET    /v1/jobs/{id}/result       the label map (?format=nii.gz|nrrd|mha|png|seg|json)
    GET    /v1/jobs/{id}/view         the web page's volumes (description; /view/data: the bytes)
    DELETE /v1/jobs/{id}              the job and its files

Every error body is ``{"detail": "<one line>"}``: the reader's or the check's own message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile as FormFile

from ..errors import SegError
from ..geometry import CaseError
from ..store import FINISHED, StoreError, StoreFull
from .jobs import Owner, owned
from .results import ResultError, describe, result_file
from .security import BodyTooLarge, GateMiddleware, caller
from .service import Service
from .uploads import UploadError, UploadFile, accept_upload

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"
_MAX_FORM_FILES = 64
_MAX_FORM_FIELDS = 16


def create_app(service: Service, manage_lifecycle: bool = True) -> Any:
    """The ASGI application of ``service`` (FastAPI, wrapped in the Host/Origin/body-size gate).

    Args:
        service: The service state (models loaded).
        manage_lifecycle: Start and stop the service with the app (uvicorn); Ray Serve replicas
            start it themselves.
    """

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        if manage_lifecycle:
            service.start()
        yield
        if manage_lifecycle:
            await asyncio.get_running_loop().run_in_executor(None, service.stop)

    app = FastAPI(title="seg-run serve", docs_url=None, redoc_url=None, openapi_url="/v1/openapi.json",
                  lifespan=lifespan)
    app.state.service = service
    _add_error_handlers(app, service)
    _add_pages(app, service)
    _add_model_routes(app, service)
    _add_job_routes(app, service)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return GateMiddleware(app, service.gate, service.settings.max_body_bytes)


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> Any:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _add_error_handlers(app: Any, service: Service) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Any:
        if exc.status_code >= 400 and exc.status_code not in (401, 404):
            service.metrics.refused(exc.status_code)
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> Any:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(BodyTooLarge)
    async def too_large(_: Request, exc: BodyTooLarge) -> Any:
        service.metrics.refused(413)
        return _error(413, str(exc))


def _owner(service: Service, request: Any) -> Owner:
    """The caller's identity, or 401."""
    who = caller(request.headers.get("authorization"), service.tokens)
    if who is None:
        raise HTTPException(401, "a valid bearer token is required (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
    return Owner(who)


def _add_pages(app: Any, service: Service) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> Any:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html",
                            headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:",
                                     "X-Frame-Options": "DENY", "Cache-Control": "no-store"})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Any:
        if not service.ready or service.queue.closing:
            return _error(503, "not ready: the models are loading or the server is stopping")
        return {"status": "ready", "models": sorted(service.models)}

    @app.get("/metrics")
    async def metrics(request: Request) -> Any:
        _owner(service, request)
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)


def _add_model_routes(app: Any, service: Service) -> None:
    def model_or_404(name: str) -> Any:
        model = service.models.get(name)
        if model is None:
            raise HTTPException(404, f"model {name!r} is not served here (GET /v1/models lists them)")
        return model

    @app.get("/v1/models")
    async def list_models(request: Request) -> list[dict[str, Any]]:
        _owner(service, request)
        return [service.model_info(m) for m in service.models.values()]

    @app.get("/v1/models/{name}")
    async def get_model(name: str, request: Request) -> dict[str, Any]:
        _owner(service, request)
        return service.model_info(model_or_404(name))

    @app.post("/v1/models/{name}/jobs", status_code=202)
    async def create_job(name: str, request: Request, wait: float = 0.0) -> Any:
        owner = _owner(service, request)
        model = model_or_404(name)
        _check_admission(service)
        entry = await _accept(service, model, request, owner)
        if not service.submit(entry):
            await asyncio.get_running_loop().run_in_executor(None, service.store.delete, entry.id)
            service.metrics.uploads.labels(outcome="busy").inc()
            raise HTTPException(429, "the job queue is full; try again later",
                                headers={"Retry-After": str(service.queue.retry_after())})
        service.metrics.uploads.labels(outcome="accepted").inc()
        if wait > 0:
            entry = await _wait(service, entry.id, owner, min(wait, service.settings.max_wait_s))
            if entry is not None and entry.state in FINISHED:
                return _finished_response(service, entry)
        return _accepted_response(service, entry.id, owner)


def _check_admission(service: Service) -> None:
    """429 before the body is read when the queue is full; 503 when the server is stopping."""

    if service.queue.closing or not service.ready:
        raise HTTPException(503, "the server is stopping or not ready; try again later",
                            headers={"Retry-After": "5"})
    if service.queue.depth + service.queue.running >= service.queue.capacity:
        service.metrics.uploads.labels(outcome="busy").inc()
        raise HTTPException(429, "the job queue is full; try again later",
                            headers={"Retry-After": str(service.queue.retry_after())})


async def _accept(service: Service, model: Any, request: Any, owner: Owner) -> Any:
    """Parse the form and store the upload as an accepted job (in a thread: fsyncs block)."""

    try:
        form = await request.form(max_files=_MAX_FORM_FILES, max_fields=_MAX_FORM_FIELDS)
    except BodyTooLarge:
        raise
    except Exception as exc:  # starlette's MultiPartException, a bad content type
        raise HTTPException(400 if "multipart" in str(exc).lower() or "boundary" in str(exc).lower() else 415,
                            f"cannot parse the upload as multipart/form-data ({exc})") from None
    try:
        files = [(name, UploadFile(value.filename or "", value.file)) for name, value in form.multi_items()
                 if isinstance(value, FormFile)]
        loop = asyncio.get_running_loop()
        limits = (service.budget.total, service.zip_limits, service.settings.max_body_bytes, service.holder.id)
        return await loop.run_in_executor(None, accept_upload, service.store, model, files, owner.id, *limits)
    except UploadError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    except StoreFull as exc:
        raise HTTPException(507, f"{exc} (the store's --quota-gb)") from None
    except CaseError as exc:
        raise HTTPException(413 if "memory limit" in str(exc) else 422, str(exc)) from None
    except SegError as exc:
        raise HTTPException(422, str(exc)) from None
    finally:
        await form.close()


def _accepted_response(service: Service, job_id: str, owner: Owner) -> Any:
    entry = owned(service.store, job_id, owner)
    body = describe(entry, service.progress.get(job_id)) if entry else {"id": job_id, "state": "accepted"}
    return JSONResponse(body, status_code=202, headers={"Location": f"/v1/jobs/{job_id}"})


def _finished_response(service: Service, entry: Any) -> Any:
    """The synchronous answer: the label map itself (200), or the job's one-line error (422)."""

    try:
        found = result_file(service.store, entry, None)
    except ResultError as exc:
        return _error(exc.status, str(exc), {"X-Job-Id": entry.id})
    return FileResponse(found.path, media_type=found.media_type, filename=found.filename,
                        headers={"X-Job-Id": entry.id, "Location": f"/v1/jobs/{entry.id}"})


async def _wait(service: Service, job_id: str, owner: Owner, seconds: float) -> Any:
    """The job once it ends, or as it is after ``seconds``.

    A job this process runs wakes the request the moment it ends; a job another replica runs is
    seen by polling the store (every 0.25 s at most).
    """
    deadline, pause = time.monotonic() + seconds, 0.02
    ended = service.watch(job_id)
    try:
        while True:
            entry = owned(service.store, job_id, owner)
            if entry is None or entry.state in FINISHED or time.monotonic() >= deadline:
                return entry
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ended.wait(), min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 1.5, 0.25)
    finally:
        service.unwatch(job_id, ended)


def _add_job_routes(app: Any, service: Service) -> None:
    def job_or_404(job_id: str, request: Request) -> Any:
        entry = owned(service.store, job_id, _owner(service, request))
        if entry is None:
            raise HTTPException(404, f"no job {job_id[:64]!r} for this token")
        return entry

    @app.get("/v1/jobs")
    async def list_jobs(request: Request) -> list[dict[str, Any]]:
        owner = _owner(service, request)
        return [describe(e, service.progress.get(e.id)) for e in service.jobs_of(owner.id)]

    @app.get("/v1/jobs/{job_id}")
    async def get_job(job_id: str, request: Request, wait: float = 0.0) -> dict[str, Any]:
        entry = job_or_404(job_id, request)
        if wait > 0 and entry.state not in FINISHED:
            entry = await _wait(service, job_id, _owner(service, request), min(wait, service.settings.max_wait_s))
            if entry is None:
                raise HTTPException(404, f"no job {job_id[:64]!r} for this token")
        return describe(entry, service.progress.get(job_id))

    @app.get("/v1/jobs/{job_id}/result")
    async def get_result(job_id: str, request: Request, format: str | None = None) -> Any:  # noqa: A002
        entry = job_or_404(job_id, request)
        try:
            found = await asyncio.get_running_loop().run_in_executor(None, result_file, service.store, entry, format)
        except ResultError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return FileResponse(found.path, media_type=found.media_type, filename=found.filename)

    @app.delete("/v1/jobs/{job_id}", status_code=204)
    async def delete_job(job_id: str, request: Request) -> None:
        job_or_404(job_id, request)
        try:
            await asyncio.get_running_loop().run_in_executor(None, service.store.delete, job_id)
        except StoreError as exc:
            raise HTTPException(404, str(exc)) from None

    _add_view_routes(app, service, job_or_404)


def _add_view_routes(app: Any, service: Service, job_or_404: Any) -> None:
    from .viewer import ensure_view, view_data

    @app.get("/v1/jobs/{job_id}/view")
    async def view(job_id: str, request: Request) -> dict[str, Any]:
        entry = job_or_404(job_id, request)
        if entry.state != "done":
            raise HTTPException(409, f"job {job_id} is {entry.state}, not done")
        model = service.models.get(entry.meta.get("model", ""))
        if model is None:
            raise HTTPException(404, f"model {entry.meta.get('model')!r} is not served here")
        return await asyncio.get_running_loop().run_in_executor(None, ensure_view, entry, model)

    @app.get("/v1/jobs/{job_id}/view/data")
    async def view_bytes(job_id: str, request: Request) -> Any:
        path = view_data(job_or_404(job_id, request))
        if not path.is_file():
            raise HTTPException(409, "ask /v1/jobs/{id}/view first")
        return FileResponse(path, media_type="application/octet-stream",
                            headers={"Content-Encoding": "gzip", "Cache-Control": "no-store"})
