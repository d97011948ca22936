"""Helpers for the service tests: a served tiny model behind FastAPI's TestClient, uploads, zips."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from runtime_helpers import make_bundle_dir

from seg_runtime.preprocess import PreprocessSpec

TOKEN = "test-token-0123456789abcdef"
OTHER_TOKEN = "other-token-0123456789abcdef"
BASE = "http://127.0.0.1:8000"


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def resampling_bundle(folder: Path, **kwargs: Any) -> Path:
    """A pointwise 3D bundle whose preprocessing reorients, normalises and resamples (the real stages)."""
    spec = PreprocessSpec(orientation="RAS", target_spacing=[1.3, 1.3, 1.3], normalization=[{"scheme": "zscore"}])
    kwargs.setdefault("preprocess", spec)
    kwargs.setdefault("patch_size", [8, 8, 8])
    return make_bundle_dir(folder, **kwargs)


def token_file(folder: Path, *tokens: str) -> Path:
    path = folder / "tokens.txt"
    path.write_text("# one token per line\n" + "\n".join(tokens or (TOKEN, OTHER_TOKEN)) + "\n")
    path.chmod(0o600)
    return path


def settings(tmp: Path, **overrides: Any) -> Any:
    from seg_runtime.serve.settings import ServeSettings

    base = ServeSettings(store=tmp / "store", token_file=token_file(tmp), max_memory_gb=1.0)
    return replace(base, **overrides)


@contextmanager
def client(service: Any, base_url: str = BASE) -> Iterator[Any]:
    """A TestClient over the service's app (its lifespan starts and stops the service)."""
    from fastapi.testclient import TestClient

    from seg_runtime.serve.app import create_app

    with TestClient(create_app(service), base_url=base_url) as test_client:
        yield test_client


def build(tmp: Path, bundles: list[Path], names: list[str] | None = None, **overrides: Any) -> Any:
    from seg_runtime.serve.service import Service

    return Service.build(settings(tmp, **overrides), bundles, names)


def upload(test_client: Any, model: str, path: Path, *, field: str = "file", filename: str | None = None,
           token: str = TOKEN, query: str = "") -> Any:
    with open(path, "rb") as handle:
        return test_client.post(f"/v1/models/{model}/jobs{query}", headers=auth(token),
                                files={field: (filename or path.name, handle)})


def wait_done(test_client: Any, job_id: str, token: str = TOKEN, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = test_client.get(f"/v1/jobs/{job_id}?wait=5", headers=auth(token)).json()
        if job["state"] in ("done", "failed") or time.monotonic() > deadline:
            return job


def zip_bytes(members: dict[str, bytes], *, symlinks: tuple[str, ...] = ()) -> bytes:
    """A zip holding ``members`` (name -> data); names in ``symlinks`` are marked as symbolic links."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            if name in symlinks:
                info.external_attr = (0o120777 << 16)
            archive.writestr(info, data)
    return buffer.getvalue()


def zip_folder(folder: Path) -> bytes:
    """The files of ``folder`` zipped (names kept, as a viewer's export would)."""
    return zip_bytes({f"series/{p.name}": p.read_bytes() for p in sorted(folder.iterdir())})


def volume(seed: int, shape: tuple[int, int, int] = (20, 18, 14)) -> np.ndarray:
    return np.random.default_rng(seed).normal(1.5, 1.0, shape).astype(np.float32)
