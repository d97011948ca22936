"""The service's settings: one dataclass built from the command line, checked before anything starts."""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import SegError

logger = logging.getLogger(__name__)

MIB = 2**20
GIB = 2**30


class ServeError(SegError):
    """A setting the service cannot start with (the message names it and says what to do)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or a host name) only reaches this machine."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeSettings:
    """How the service runs.

    Attributes:
        store: The job store folder (created with mode 0700).
        host, port: Where uvicorn listens.
        token_file: Bearer tokens, one per line (``#`` comments); each token sees only its own jobs.
        no_auth: No token (loopback only, with a warning).
        allow_hosts: ``Host`` names accepted besides the bind address (and localhost on loopback).
        allow_origins: Cross-site origins allowed to call the API (``https://viewer.example``).
        ssl_certfile, ssl_keyfile: TLS; required off loopback.
        max_body_mb: Largest request body; larger ones get 413 before they are read.
        queue_size: Jobs waiting or running at most; beyond it uploads get 429 with Retry-After.
        workers: Jobs predicted at once (threads sharing each model's session).
        max_memory_gb: Memory for all jobs together (None: ``$SEG_MAX_MEMORY_GB`` or half the RAM).
        quota_gb: Disk for the job store (inputs and results); beyond it uploads get 507.
        keep_hours: Finished jobs (and their files) are removed this long after they end.
        max_wait_s: The longest ``?wait=`` a request may ask for.
        zip_max_entries, zip_max_mb: Bounds on a DICOM zip, checked before anything is unpacked.
        threads: onnxruntime intra-op threads per model (None: the physical cores).
        provider: onnxruntime execution provider.
    """

    store: Path
    host: str = "127.0.0.1"
    port: int = 8000
    token_file: Path | None = None
    no_auth: bool = False
    allow_hosts: tuple[str, ...] = ()
    allow_origins: tuple[str, ...] = ()
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    max_body_mb: float = 1024.0
    queue_size: int = 16
    workers: int = 1
    max_memory_gb: float | None = None
    quota_gb: float = 50.0
    keep_hours: float = 24.0
    max_wait_s: float = 600.0
    zip_max_entries: int = 10000
    zip_max_mb: float = 4096.0
    threads: int | None = None
    provider: str = "auto"

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * MIB)

    @property
    def quota_bytes(self) -> int:
        return int(self.quota_gb * GIB)

    @property
    def tls(self) -> bool:
        return self.ssl_certfile is not None

    def check(self) -> None:
        """Refuse settings that would expose the service or cannot work, in one line each.

        Raises:
            ServeError: ``--no-auth`` off loopback, no TLS off loopback, a missing or unsafe token
                file, half a TLS pair, a bound that is not positive.
        """
        loopback = is_loopback(self.host)
        if self.no_auth and not loopback:
            raise ServeError(f"--no-auth is allowed on loopback only (--host {self.host} is reachable from other "
                             "machines); give a --token-file")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ServeError("TLS needs both --ssl-certfile and --ssl-keyfile")
        if not loopback and not self.tls:
            raise ServeError(f"--host {self.host} is reachable from other machines: give --ssl-certfile and "
                             "--ssl-keyfile (TLS is required off loopback)")
        for name in ("queue_size", "workers", "zip_max_entries"):
            if getattr(self, name) < 1:
                raise ServeError(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("max_body_mb", "quota_gb", "keep_hours", "max_wait_s", "zip_max_mb"):
            if not getattr(self, name) > 0:
                raise ServeError(f"{name} must be positive (got {getattr(self, name)})")
        if self.no_auth:
            logger.warning("--no-auth: any local user or web page in a browser on this machine can use the service")
            return
        if self.token_file is None:
            raise ServeError("a --token-file is required (one token per line; --no-auth on loopback only)")
        _check_token_file(self.token_file)


def _check_token_file(path: Path) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ServeError(f"--token-file {path}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("--token-file %s is readable by other users (chmod 600 it)", path)
