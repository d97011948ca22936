"""A real Orthanc PACS for the integration tests: a generated config (loopback ports found free, its own
storage folder, a generated HTTP user), started as a subprocess, waited for, stopped.

Orthanc 1.10 (Debian's ``orthanc``) has no bind-address option: its HTTP server refuses non-local
clients (``RemoteAccessAllowed: false``) and its DICOM server stores and retrieves only for the
modalities the test registers on 127.0.0.1 (``DicomAlwaysAllow*: false``, ``DicomCheckModalityHost``).
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))


def orthanc_binary() -> str | None:
    """The Orthanc executable (Debian installs it in /usr/sbin, often not on a user's PATH)."""
    return shutil.which("Orthanc") or next((str(p) for p in (Path("/usr/sbin/Orthanc"),) if p.is_file()), None)


def dicomweb_plugin() -> Path:
    for folder in PLUGIN_DIRS:
        found = sorted(folder.glob("libOrthancDicomWeb.so*"))
        if found:
            return found[0]
    raise FileNotFoundError("the Orthanc DICOMweb plugin (Debian package orthanc-dicomweb) is not installed")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Orthanc:
    """One Orthanc process under ``folder``; ``stop()`` ends it."""

    def __init__(self, folder: Path, binary: str) -> None:
        self.folder = folder
        self.http_port, self.dicom_port = free_port(), free_port()
        self.user, self.password = "seg", secrets.token_urlsafe(12)
        self.ae_title = "ORTHANC"
        config = {
            "Name": "seg-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": self.ae_title,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "DicomAlwaysAllowEcho": False, "DicomAlwaysAllowStore": False, "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False, "DicomAlwaysAllowMove": False, "DicomCheckModalityHost": True,
            "DicomModalities": {}, "Plugins": [str(dicomweb_plugin())],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "StableAge": 1, "HttpCompressionEnabled": False,
        }
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "orthanc.json").write_text(json.dumps(config, indent=1))
        self.log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        self._wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def _wait(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({self.process.returncode}): "
                                   f"{(self.folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                self.get("/system")
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise TimeoutError("Orthanc's REST API did not come up")

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json",
                accept: str | None = None) -> bytes:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        if body is not None:
            request.add_header("Content-Type", content_type)
        if accept:
            request.add_header("Accept", accept)
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 (loopback)
            return response.read()

    def get(self, path: str, accept: str | None = None) -> Any:
        return json.loads(self.request("GET", path, accept=accept) or b"null")

    def post(self, path: str, payload: Any) -> Any:
        return json.loads(self.request("POST", path, json.dumps(payload).encode()) or b"null")

    def upload(self, files: list[Path]) -> list[dict[str, Any]]:
        return [json.loads(self.request("POST", "/instances", p.read_bytes(), "application/dicom")) for p in files]

    def add_modality(self, name: str, ae_title: str, port: int) -> None:
        self.request("PUT", f"/modalities/{name}", json.dumps({
            "AET": ae_title, "Host": "127.0.0.1", "Port": port, "AllowEcho": True, "AllowStore": True,
            "AllowFind": True, "AllowGet": True, "AllowMove": True}).encode())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
