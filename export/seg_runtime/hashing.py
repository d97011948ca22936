"""File digests, written once: the run record's output check and the checkpoint stamps use these.

BLAKE2b-128 is the run record's digest (fast, short); SHA-256 names a file to people and to other
tools (checkpoints in a CV folder's validation stamp, the files of a deploy bundle).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

_CHUNK = 1 << 20


def _stream(path: str | os.PathLike[str], digest: Any) -> int:
    """Feed the file at ``path`` into ``digest`` in 1 MiB chunks; returns its size in bytes."""
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size


def file_digest(path: str | os.PathLike[str]) -> tuple[int, str]:
    """Size in bytes and BLAKE2b-128 hex digest of a file."""
    digest = hashlib.blake2b(digest_size=16)
    size = _stream(path, digest)
    return size, digest.hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    _stream(path, digest)
    return digest.hexdigest()
