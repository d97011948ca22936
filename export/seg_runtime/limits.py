"""Memory bounds checked before allocating: a header's claimed size and a case's whole footprint.

A header may lie (a 1 KiB file claiming 10^12 voxels) and a spacing may be absurd (a 0.001 mm
target grid): both would allocate far more than the machine has before failing. These checks
run on shapes alone, so a bad case fails in one line and costs nothing.

The limit is ``--max-memory GB``, else the ``SEG_MAX_MEMORY_GB`` environment variable, else
half of the physical memory. It bounds the data a run holds beyond the loaded model: every case
reserves :func:`case_peak_bytes` before anything of it beyond its files is allocated, and a case
read ahead only gets what the current case leaves (:mod:`seg_runtime.runners.local`).
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


class MemoryBudgetError(CaseError):
    """A case needs more memory than it may have (:attr:`needed` bytes): refused before allocating."""

    def __init__(self, message: str, needed: int) -> None:
        super().__init__(message)
        self.needed = needed


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
        raise MemoryBudgetError(
            f"{path}: {what} of shape {tuple(int(s) for s in shape)} needs {_gib(nbytes)}, over the memory "
            f"limit of {_gib(limit)} (raise it with --max-memory GB or {MEMORY_ENV})", nbytes)


def case_peak_bytes(
    input_shape: Sequence[int], in_channels: int, grid_shape: Sequence[int], out_channels: int, *,
    score_itemsize: int, resampled: bool, reoriented: bool, keep_probabilities: bool = False,
    preview: bool = False, kept_input: bool = False, input_copy: bool = False,
) -> int:
    """An upper bound of the bytes one case holds at once, phase by phase (the largest phase counts).

    S input voxels, G model-grid voxels, C input channels, K output channels:

    - prepare: the float32 image (C S 4), normalised in place, and either the model grid (C G 4)
      with one channel's float32 temporary (G 4) or, reoriented without resampling, a contiguous copy;
      with ``input_copy`` (a part that crops into a new array first, like nnU-Net's) one more image and
      its mask (C S 4 + S);
    - infer: the grid image and the blended scores (K G, float32 or float16) and a padded copy;
    - restore: the scores, and per channel its restored copy, the running maximum and the label map
      (2 S s + S) plus the resampling's temporaries (float16 scores: a float32 grid copy and the
      float32 and float16 restored forms, G 4 + S 6; float32 scores: S 4); the probabilities kept
      (K S 2) and quantised for writing (K S + S 4) when asked for.
    - a float16 first channel for the preview (S 2) through every phase when asked for;
    - the input as read (C S 4) through every phase when ``kept_input`` (``--statistics``), and then
      the preprocessing works on a copy of it.
    """
    voxels, grid = math.prod(int(s) for s in input_shape), math.prod(int(s) for s in grid_shape)
    image = in_channels * voxels * 4
    prepare = image + (in_channels * grid * 4 + grid * 4 if resampled else image if reoriented else 0)
    if input_copy:
        prepare += image + voxels
    scores = out_channels * grid * score_itemsize
    infer = 2 * in_channels * grid * 4 + scores
    transient = grid * 4 + voxels * 6 if score_itemsize < 4 else voxels * 4
    restore = scores + voxels * (2 * score_itemsize + 1) + transient
    if keep_probabilities:
        restore += out_channels * voxels * 3 + voxels * 4
    return max(prepare, infer, restore) + (voxels * 2 if preview else 0) + (image if kept_input else 0)


def check_case_memory(path: Path, needed: int, limit: int | None, what: str = "this case") -> None:
    """Raise :class:`MemoryBudgetError` when ``needed`` bytes exceed ``limit``, with the figure."""
    if limit is not None and needed > limit:
        raise MemoryBudgetError(
            f"{path}: {what} needs {_gib(needed)} (image, model grid, scores and label map at their peak), over "
            f"the memory limit of {_gib(limit)} (raise it with --max-memory GB or {MEMORY_ENV})", needed)


def estimate_case_bytes(
    voxels: int, in_channels: int, itemsize: int, grid: Sequence[int], out_channels: int, statistics: bool = True
) -> int:
    """An upper bound of the bytes one case holds at its peak, from header shapes alone (what the
    service reserves of ``--max-memory`` for a job before it starts): the file as stored while it is
    read, plus :func:`case_peak_bytes` taken at its largest (resampled and reoriented, float32 scores)
    with the input kept for ``--statistics`` (every served job computes them).

    Args:
        voxels: Spatial voxels of the input.
        in_channels: Input channels.
        itemsize: Bytes per stored input value.
        grid: The model-grid shape.
        out_channels: Network output channels.
        statistics: The input is kept for ``--statistics``.
    """
    peak = case_peak_bytes((voxels,), in_channels, grid, out_channels, score_itemsize=4, resampled=True,
                           reoriented=True, kept_input=statistics)
    return int(voxels * in_channels * itemsize + peak)
