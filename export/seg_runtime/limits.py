"""Memory bounds checked before allocating: a header's claimed size and a case's model grid.

A header may lie (a 1 KiB file claiming 10^12 voxels) and a spacing may be absurd (a 0.001 mm
target grid): both would allocate far more than the machine has before failing. These checks
run on shapes alone, so a bad case fails in one line and costs nothing.

The limit is ``--max-memory GB``, else the ``SEG_MAX_MEMORY_GB`` environment variable, else
half of the physical memory.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path

from .geometry import CaseError

MEMORY_ENV = "SEG_MAX_MEMORY_GB"
# Deflate (gzip/zlib) cannot expand data by more than about 1032:1, so a compressed payload of
# n bytes can never hold more than this many times n bytes of voxels.
DEFLATE_MAX_RATIO = 1032
_FALLBACK_BYTES = 16 * 2**30
# Bytes per model-grid voxel per channel held at once: the image (normalised and resampled
# copies, float32) and the probabilities (float32).
_GRID_BYTES_PER_IMAGE_CHANNEL = 8
_GRID_BYTES_PER_CLASS = 4


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


def physical_memory_bytes() -> int:
    """The machine's physical memory, or 16 GiB when the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return _FALLBACK_BYTES


def parse_memory_gb(text: str) -> float:
    """``--max-memory`` values: a positive number of GiB (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a positive number of GB, got '{text}'")
    return value


def max_memory_bytes(gigabytes: float | None = None) -> int:
    """The memory limit in bytes: ``gigabytes``, else ``$SEG_MAX_MEMORY_GB``, else half the RAM.

    Raises:
        ValueError: ``$SEG_MAX_MEMORY_GB`` is not a positive number.
    """
    if gigabytes is None and os.environ.get(MEMORY_ENV):
        try:
            gigabytes = parse_memory_gb(os.environ[MEMORY_ENV])
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"{MEMORY_ENV}: {exc}") from None
    if gigabytes is None:
        return physical_memory_bytes() // 2
    return int(gigabytes * 2**30)


def check_claimed_size(
    path: Path, shape: Sequence[int], itemsize: int, stored_bytes: int, *, compressed: bool
) -> None:
    """Raise unless the file can hold the voxels its header claims.

    Args:
        path: The file (named in the message).
        shape: The claimed array shape (channels included).
        itemsize: Bytes per stored value.
        stored_bytes: Bytes of voxel payload the file has.
        compressed: The payload is deflate-compressed (bounded by :data:`DEFLATE_MAX_RATIO`).

    Raises:
        CaseError: The header claims more data than the file can hold.
    """
    claimed = math.prod(int(s) for s in shape) * itemsize
    bound = stored_bytes * DEFLATE_MAX_RATIO if compressed else stored_bytes
    if claimed > bound:
        detail = str(stored_bytes)
        if compressed:
            detail = f"at most {bound} bytes uncompressed from {stored_bytes}"
        raise CaseError(
            f"{path}: truncated or corrupt: the header claims {tuple(int(s) for s in shape)} voxels "
            f"({claimed} bytes) but the file holds {detail} bytes of voxel data"
        )


def check_memory(path: Path, what: str, shape: Sequence[int], nbytes: int, limit: int | None) -> None:
    """Raise when ``nbytes`` (an array of ``shape``) would exceed the memory ``limit`` (bytes)."""
    if limit is not None and nbytes > limit:
        raise CaseError(
            f"{path}: {what} of shape {tuple(int(s) for s in shape)} needs {_gib(nbytes)}, over the memory "
            f"limit of {_gib(limit)} (raise it with --max-memory GB or {MEMORY_ENV})"
        )


def check_model_grid(
    path: Path, grid: Sequence[int], in_channels: int, out_channels: int, limit: int | None,
    held_bytes: int = 0,
) -> None:
    """Raise when predicting on the resampled model ``grid`` would exceed ``limit`` (bytes).

    ``held_bytes``: memory the case keeps besides the grid while it runs (the input image kept for
    ``--statistics``).
    """
    voxels = math.prod(int(s) for s in grid)
    nbytes = voxels * (_GRID_BYTES_PER_IMAGE_CHANNEL * in_channels + _GRID_BYTES_PER_CLASS * out_channels)
    what = "the resampled model grid" + (" (with the input kept for --statistics)" if held_bytes else "")
    check_memory(path, what, grid, nbytes + held_bytes, limit)


def estimate_case_bytes(
    voxels: int, in_channels: int, itemsize: int, grid: Sequence[int], out_channels: int
) -> int:
    """Bytes one case holds at its peak through the three stages, from shapes alone.

    The sum of what the stages hold (an upper bound; they do not all live at once): the image as
    stored plus its float32 copy, the model grid (see :func:`check_model_grid`), the scores restored
    to the input grid (float32) and the label map. The service reserves this much of ``--max-memory``
    for a job before it starts.

    Args:
        voxels: Spatial voxels of the input.
        in_channels: Input channels.
        itemsize: Bytes per stored input value.
        grid: The model-grid shape.
        out_channels: Network output channels.
    """
    grid_voxels = math.prod(int(s) for s in grid)
    read = voxels * in_channels * (itemsize + 4)
    model = grid_voxels * (_GRID_BYTES_PER_IMAGE_CHANNEL * in_channels + _GRID_BYTES_PER_CLASS * out_channels)
    restore = voxels * (4 * out_channels + 1)
    return int(read + model + restore)
