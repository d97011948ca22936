"""Which server processes sharing one job store are alive: one lock file each, held for life.

Ray Serve replicas (on one machine or on several nodes over a shared file system) share the store.
Each process holds an exclusive ``flock`` on ``STORE/holders/<id>.lock`` while it lives, and files
the jobs it accepts and runs under its id. A replica that starts takes over only the jobs whose
holder's lock it can take itself, i.e. whose process has died (the kernel, or the NFS server's
lock manager, drops a dead process's locks). The lock is advisory: nothing but this module reads it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import socket
from pathlib import Path

logger = logging.getLogger(__name__)

HOLDERS_DIR = "holders"
_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}")


class Holder:
    """This process's lock in the store.

    Args:
        store_root: The job store's root folder.
    """

    def __init__(self, store_root: Path) -> None:
        self.folder = Path(store_root) / HOLDERS_DIR
        self.folder.mkdir(mode=0o700, exist_ok=True)
        host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:60]
        self.id = f"{host}-{os.getpid()}-{secrets.token_hex(4)}"
        self._fd: int | None = os.open(self.folder / f"{self.id}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        _lock(self._fd)

    def alive(self, holder_id: object) -> bool:
        """Whether the process ``holder_id`` still holds its lock (this process always does)."""
        if holder_id == self.id:
            return True
        if not isinstance(holder_id, str) or not _ID.fullmatch(holder_id):
            return False
        path = self.folder / f"{holder_id}.lock"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            _lock(fd)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases the lock if it was taken
        with contextlib.suppress(OSError):
            path.unlink()  # a dead holder's file
        return False

    def take_over(self, entry_id: str, holder_id: object) -> bool:
        """Claim a dead holder's job for this process; False when another process claimed it first.

        Replicas starting together all see the same dead holder: an exclusively created marker
        (one per job and dead holder) lets exactly one of them take the job.
        """
        marker = self.folder / f"{entry_id}.{holder_id if isinstance(holder_id, str) and holder_id else 'none'}.taken"
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            try:
                return marker.read_text(encoding="utf-8") == self.id
            except OSError:
                return False
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(self.id)
        return True

    def sweep(self, live_entries: set[str]) -> None:
        """Remove take-over markers of jobs that no longer exist."""
        for marker in self.folder.glob("*.taken"):
            if marker.name.split(".", 1)[0] not in live_entries:
                with contextlib.suppress(OSError):
                    marker.unlink()

    def close(self) -> None:
        """Release the lock (at a clean stop; a killed process's lock goes with it)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                (self.folder / f"{self.id}.lock").unlink()
            os.close(self._fd)
            self._fd = None


def _lock(fd: int) -> None:
    """Take an exclusive lock without waiting (BlockingIOError when another process holds it)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: one process per store
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
