"""What made an output: the input's identity, cheap enough for archives, and a file's quick check.

Skip-done (:mod:`seg_runtime.planning`) trusts a finished output only when the record proves it came
from this input, this model and these settings, and that the file on disk is the one written. Both
checks must cost the same per case however large the files are, or a rerun over 100,000 finished
cases would read every byte of the archive twice: a file is identified by its size, its
modification time and a BLAKE2b digest of its first and last 4 KiB (a rewrite that keeps size and
modification time to the nanosecond and changes only the middle is not caught; a changed size,
time, header or tail is).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from .hashing import file_digest

SAMPLE_BYTES = 4096


def sample_digest(path: str | os.PathLike[str], size: int | None = None) -> str:
    """BLAKE2b-128 of a file's size, first and last :data:`SAMPLE_BYTES` bytes."""
    size = os.stat(path).st_size if size is None else size
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as handle:
        digest.update(handle.read(SAMPLE_BYTES))
        if size > SAMPLE_BYTES:
            handle.seek(max(SAMPLE_BYTES, size - SAMPLE_BYTES))
            digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()


def quick_check(path: str | os.PathLike[str]) -> dict[str, int | str]:
    """``{"bytes", "mtime_ns", "sample"}`` of a file, recorded when it is written and compared later."""
    stat = os.stat(path)
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sample": sample_digest(path, stat.st_size)}


def _files(path: Path) -> list[Path]:
    """The files of one input path: itself, or the files of a folder (a DICOM series), sorted."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    return [path]


def input_identity(paths: Sequence[str | os.PathLike[str]]) -> str:
    """One digest for the input files of a case: names within the case, sizes, times and samples.

    The case's absolute location is not part of it, so a moved archive keeps its outputs.
    """
    digest = hashlib.blake2b(digest_size=16)
    for path in map(Path, paths):
        for file in _files(path):
            check = quick_check(file)
            name = file.name if file == path else f"{path.name}/{file.name}"
            digest.update(f"{name}|{check['bytes']}|{check['mtime_ns']}|{check['sample']}\n".encode())
    return digest.hexdigest()


def output_fields(path: str | os.PathLike[str]) -> dict[str, int | str]:
    """The record of a just-written output: its quick check and its full BLAKE2b digest."""
    fields: dict[str, int | str] = dict(quick_check(path))
    fields["blake2b"] = file_digest(path)[1]
    return fields
