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


def free_port() -> int:
    """A TCP port free on loopback now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``seg-run serve`` in its own process, on loopback, with a log file; stopped by :meth:`stop`.

    Args:
        tmp: Folder for the log (and the token file).
        bundles: Bundle folders.
        store: The job store folder.
        extra: More ``seg-run serve`` arguments.
        ready_s: How long to wait for ``/readyz``.
    """

    def __init__(self, tmp: Path, bundles: list[Path], store: Path, *extra: str, ready_s: float = 90.0,
                 verify: Path | None = None) -> None:
        import subprocess
        import sys

        self.port = free_port()
        self.verify = str(verify) if verify else True
        self.url = f"{'https' if verify else 'http'}://127.0.0.1:{self.port}"
        self.log = tmp / f"server-{self.port}.log"
        tokens = tmp / "tokens.txt" if (tmp / "tokens.txt").exists() else token_file(tmp)
        command = [sys.executable, "-m", "seg_runtime", "serve", *map(str, bundles), "--port", str(self.port),
                   "--store", str(store), "--token-file", str(tokens), "--provider", "cpu", "--threads", "1",
                   *extra]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready(ready_s)

    def wait_ready(self, seconds: float) -> None:
        import httpx

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"seg-run serve exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2, verify=self.verify).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise AssertionError(f"seg-run serve not ready after {seconds}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        import os

        os.kill(self.process.pid, sig)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        import signal
        import subprocess

        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait(10)
        return self.process.returncode


def post_file(url: str, model: str, path: Path, token: str = TOKEN, timeout: float = 60.0) -> Any:
    import httpx

    with open(path, "rb") as handle:
        return httpx.post(f"{url}/v1/models/{model}/jobs", headers=auth(token),
                          files={"file": (path.name, handle)}, timeout=timeout)


def wait_job(url: str, job_id: str, token: str = TOKEN, timeout: float = 120.0) -> dict[str, Any]:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        job = httpx.get(f"{url}/v1/jobs/{job_id}?wait=5", headers=auth(token), timeout=30).json()
        if job["state"] in ("done", "failed") or time.monotonic() > deadline:
            return job


def result_labels(url: str, job_id: str, folder: Path, token: str = TOKEN) -> np.ndarray:
    import httpx

    from seg_runtime.io import read_image

    response = httpx.get(f"{url}/v1/jobs/{job_id}/result", headers=auth(token), timeout=60)
    assert response.status_code == 200, response.text
    path = folder / f"{job_id}.nii.gz"
    path.write_bytes(response.content)
    return np.asarray(read_image(path)[0])
