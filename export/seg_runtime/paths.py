"""Paths a file names (a bundle's model, a header's detached data file), kept inside their folder."""

from __future__ import annotations

from pathlib import Path, PurePosixPath


def confined(folder: Path, name: str) -> Path | None:
    """``folder / name`` when ``name`` is a relative path that stays inside ``folder`` (symbolic links
    resolved), else None (absolute paths, ``..``, a link pointing out)."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if not name or pure.is_absolute() or ".." in pure.parts or ":" in name:
        return None
    path = folder / Path(*pure.parts)
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return None
    return path
