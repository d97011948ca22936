"""Sending results: C-STORE to an AE, STOW-RS to a DICOMweb server, with retries and backoff.

A destination either takes every object or raises :class:`DeliveryError` with one line saying what it
answered (a DIMSE status, the STOW-RS FailedSOPSequence with its reasons, an HTTP status, a refused
connection). :func:`deliver` retries with exponential backoff and returns the last error.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..errors import SegError
from .peers import NodeError, Peer

logger = logging.getLogger(__name__)

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
_FAILED_SOP_SEQUENCE, _FAILURE_REASON, _REFERENCED_SOP_INSTANCE = "00081198", "00081197", "00081155"


class DeliveryError(SegError, RuntimeError):
    """A destination did not take the results (the message says what it answered)."""


class Destination(Protocol):
    """Where results go."""

    def send(self, files: Sequence[Path]) -> None:
        """Send every file or raise :class:`DeliveryError`."""
        ...


class CStoreDestination:
    """C-STORE SCU to one AE (SEG and RTSTRUCT storage, explicit and implicit little endian).

    Args:
        peer: The destination AE.
        calling_ae: This node's AE title.
        timeout_s: Network and DIMSE timeout.
    """

    def __init__(self, peer: Peer, calling_ae: str, timeout_s: float = 30.0) -> None:
        self.peer, self.calling_ae, self.timeout_s = peer, calling_ae, timeout_s

    def __str__(self) -> str:
        return f"C-STORE {self.peer}"

    def send(self, files: Sequence[Path]) -> None:
        import pydicom
        from pynetdicom import AE

        datasets = [pydicom.dcmread(path) for path in files]
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
            ae.add_requested_context(sop_class, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        assoc = ae.associate(self.peer.host, self.peer.port, ae_title=self.peer.ae_title)
        if not assoc.is_established:
            why = "rejected the association" if assoc.is_rejected else "is unreachable or aborted"
            raise DeliveryError(f"{self}: the destination {why}")
        try:
            for ds in datasets:
                answer = assoc.send_c_store(ds)
                status = int(answer.get("Status", -1)) if answer else -1
                if status == -1:
                    raise DeliveryError(f"{self}: no answer to the C-STORE of {ds.SOPInstanceUID}")
                if status != 0 and not 0xB000 <= status <= 0xBFFF:  # warnings are stored
                    raise DeliveryError(f"{self}: C-STORE of {ds.SOPInstanceUID} answered 0x{status:04X}")
        finally:
            if assoc.is_established:
                assoc.release()


def authorization(path: Path | None) -> str | None:
    """The Authorization header from a credentials file: ``user:password`` (Basic) or a token (Bearer)."""
    if path is None:
        return None
    try:
        if path.stat().st_mode & 0o077:
            logger.warning("%s: the credentials file is readable by other users (chmod 600 it)", path)
        secret = path.read_text(encoding="utf-8").strip().splitlines()[0].strip()
    except (OSError, IndexError) as exc:
        raise NodeError(f"--stow-credentials: cannot read a credential from {path} ({exc})") from None
    if secret.lower().startswith("bearer "):
        return secret
    if ":" in secret:
        return "Basic " + base64.b64encode(secret.encode("utf-8")).decode("ascii")
    return f"Bearer {secret}"


class StowDestination:
    """STOW-RS (``POST {url}/studies``, multipart/related application/dicom).

    Args:
        url: The DICOMweb root, e.g. ``http://pacs:8042/dicom-web``.
        auth: The Authorization header value (see :func:`authorization`), or None.
        timeout_s: HTTP timeout.
    """

    def __init__(self, url: str, auth: str | None = None, timeout_s: float = 60.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise NodeError(f"--stow: expected an http(s) URL, got {url!r}")
        self.url, self.auth, self.timeout_s = url.rstrip("/"), auth, timeout_s

    def __str__(self) -> str:
        return f"STOW-RS {self.url}"

    def send(self, files: Sequence[Path]) -> None:
        boundary = secrets.token_hex(16)
        parts = [b"--%s\r\nContent-Type: application/dicom\r\n\r\n%s\r\n" % (boundary.encode(), p.read_bytes())
                 for p in files]
        body = b"".join(parts) + b"--%s--\r\n" % boundary.encode()
        request = urllib.request.Request(f"{self.url}/studies", data=body, method="POST", headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json"})
        if self.auth:
            request.add_header("Authorization", self.auth)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 (http(s) only)
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise DeliveryError(f"{self}: {getattr(exc, 'reason', exc)}") from None
        failed = failed_instances(payload)
        if failed:
            raise DeliveryError(f"{self}: HTTP {status}, FailedSOPSequence: " + "; ".join(failed))
        if status not in (200, 202):
            raise DeliveryError(f"{self}: HTTP {status}")


def failed_instances(payload: bytes) -> list[str]:
    """The FailedSOPSequence of a STOW-RS response (DICOM JSON) as ``UID (reason 0xXXXX)`` lines."""
    try:
        data = json.loads(payload or b"{}")
    except ValueError:
        return []
    data = data[0] if isinstance(data, list) and data else data
    items = (data.get(_FAILED_SOP_SEQUENCE) or {}).get("Value") or [] if isinstance(data, dict) else []
    found = []
    for item in items:
        uid = ((item.get(_REFERENCED_SOP_INSTANCE) or {}).get("Value") or ["?"])[0]
        reason = ((item.get(_FAILURE_REASON) or {}).get("Value") or [None])[0]
        found.append(f"{uid} (reason {f'0x{int(reason):04X}' if reason is not None else 'not given'})")
    return found


def deliver(destination: Destination, files: Sequence[Path], *, retries: int, delay_s: float,
            sleep: Callable[[float], Any] = time.sleep) -> tuple[str | None, int]:
    """Send ``files``, retrying ``retries`` times with backoff ``delay_s * 2**attempt``.

    Returns:
        The last error (None when delivered) and the number of attempts.
    """
    error = None
    for attempt in range(retries + 1):
        try:
            destination.send(files)
            return None, attempt + 1
        except DeliveryError as exc:
            error = str(exc)
        except Exception as exc:  # a library's failure must not stop the node: it is this delivery's error
            error = f"{destination}: {type(exc).__name__}: {exc}"
        logger.warning("delivery attempt %d/%d failed: %s", attempt + 1, retries + 1, error)
        if attempt < retries:
            sleep(delay_s * 2**attempt)
    return error, retries + 1
