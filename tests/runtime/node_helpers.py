"""Helpers for the DICOM node tests: a node on a free loopback port, an SCU that sends series, a storage
SCP and a STOW-RS endpoint that collect what the node delivers (all real, all on 127.0.0.1)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
VERIFICATION = "1.2.840.10008.1.1"


def records(store: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The node's run record lines (of one ``type``)."""
    lines = [json.loads(line) for line in (store / "predictions.jsonl").read_text().splitlines() if line.strip()]
    return [line for line in lines if kind is None or line.get("type") == kind]


def send(port: int, files: Iterable[Path | Any], *, calling: str = "SCU", called: str = "SEG",
         syntaxes: Sequence[str] | None = None, abort_after: int | None = None) -> list[int] | None:
    """C-STORE ``files`` (paths or data sets) to the node in one association; the statuses, or None when the
    association was refused. ``abort_after``: A-ABORT after that many instances (a peer that disconnects)."""
    import pydicom
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    for sop_class in (CT_STORAGE, MR_STORAGE):
        if syntaxes:
            ae.add_requested_context(sop_class, list(syntaxes))
        else:
            ae.add_requested_context(sop_class)
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return None
    statuses = []
    for index, item in enumerate(files):
        if abort_after is not None and index == abort_after:
            assoc.abort()
            return statuses
        dataset = pydicom.dcmread(item) if isinstance(item, Path) else item
        answer = assoc.send_c_store(dataset)
        statuses.append(int(answer.Status) if "Status" in answer else -1)
    assoc.release()
    return statuses


def echo(port: int, calling: str = "SCU") -> bool:
    """Whether the node answers C-ECHO with success."""
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title="SEG")
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and int(status.Status) == 0


class StorageSCP:
    """A storage SCP on a free loopback port that keeps every data set it receives (a PACS stand-in)."""

    def __init__(self, ae_title: str = "DEST") -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        self.received: list[Any] = []
        ae = AE(ae_title=ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax)
        self.server = ae.start_server(("127.0.0.1", 0), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = int(self.server.server_address[1])

    def _store(self, event: Any) -> int:
        self.received.append(event.dataset)
        return 0x0000

    def close(self) -> None:
        self.server.shutdown()


class StowEndpoint:
    """A DICOMweb STOW-RS endpoint on loopback that answers with a canned status and FailedSOPSequence,
    and remembers each request's Authorization header and body size."""

    def __init__(self, status: int = 409, failed_reason: int = 0xA700) -> None:
        self.requests: list[dict[str, Any]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                endpoint.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                          "type": self.headers.get("Content-Type"), "bytes": len(body)})
                payload = json.dumps({"00081198": {"vr": "SQ", "Value": [{
                    "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.66.4"]},
                    "00081155": {"vr": "UI", "Value": ["1.2.3.4.5"]},
                    "00081197": {"vr": "US", "Value": [failed_reason]}}]}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(condition: Any, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False
