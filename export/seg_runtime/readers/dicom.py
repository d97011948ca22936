"""DICOM series folder → 3D volume (one series per folder), via pydicom.

The volume's axes are (column index, row index, slice): the first follows
ImageOrientationPatient's row direction, the second its column direction, the third the
slice normal, with slices sorted by their position along that normal.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..geometry import LPS_SIGNS, CaseError, Geometry, affine_from_axes, make_geometry

logger = logging.getLogger(__name__)

_MAGIC_OFFSET = 128


def is_dicom_file(path: Path) -> bool:
    """True for a ``.dcm`` file or any file with the ``DICM`` magic at byte 128."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(_MAGIC_OFFSET)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def read_dicom_series(folder: Path, allow_gaps: bool = False) -> tuple[np.ndarray, Geometry]:
    """Read every DICOM image in ``folder`` as one volume.

    Slices must be evenly spaced along their normal (a missing slice would otherwise be hidden in a
    mean gap, misplacing every slice after it by millimetres): uneven gaps fail the series, or with
    ``allow_gaps`` the slices are resampled (linearly along the normal) onto an even grid at the
    median gap, so each voxel sits where it was acquired.

    Args:
        folder: A folder holding the slices of exactly one series.
        allow_gaps: Resample a series with uneven gaps instead of refusing it.

    Returns:
        The rescaled volume (Shape: [X, Y, Z], float32) and its RAS+ geometry.

    Raises:
        CaseError: No DICOM images, several series, unreadable/compressed files, missing
            geometry tags, inconsistent slices.
    """
    slices = _load_slices(folder)
    uids = sorted({str(ds.get("SeriesInstanceUID", "")) for _, ds in slices})
    if len(uids) > 1:
        raise CaseError(
            f"{folder}: mixed DICOM series ({len(uids)} SeriesInstanceUIDs: {', '.join(uids[:3])}"
            f"{', ...' if len(uids) > 3 else ''}); put each series in its own folder"
        )
    row, col, positions = _slice_geometry(folder, slices)
    normal = np.cross(row, col)
    order = np.argsort(positions @ normal, kind="stable")
    slices = [slices[i] for i in order]
    positions = positions[order]
    depths = positions @ normal
    if len(depths) > 1 and np.min(np.diff(depths)) < 1e-4:
        raise CaseError(
            f"{folder}: several DICOM slices share one position (multiple acquisitions in one series?)"
        )
    planes = [_pixels(path, ds) for path, ds in slices]
    for (path, _), plane in zip(slices, planes, strict=True):
        if plane.shape != planes[0].shape:
            raise CaseError(
                f"{path}: slice size {plane.shape[::-1]} differs from {planes[0].shape[::-1]} in {folder}"
            )
    volume = np.stack(planes, axis=-1)
    spacing = [float(v) for v in slices[0][1].PixelSpacing]
    if len(slices) > 1:
        # The slices' advance per mm along the normal (not the normal itself: a gantry tilt shears it).
        direction = (positions[-1] - positions[0]) / (depths[-1] - depths[0])
        if _uneven(np.diff(depths)):
            volume, depths = _even_grid(folder, volume, depths, allow_gaps)
        step = direction * (depths[-1] - depths[0]) / (len(depths) - 1)
    else:
        thickness = slices[0][1].get("SpacingBetweenSlices") or slices[0][1].get("SliceThickness") or 1.0
        step = normal * float(thickness)
    # PixelSpacing is (between rows, between columns): rows advance along the column direction.
    axes = np.stack([row * spacing[1], col * spacing[0], step], axis=1)
    affine = affine_from_axes(axes, positions[0], LPS_SIGNS)
    return volume, make_geometry(affine, volume.shape, "dicom")


def _load_slices(folder: Path) -> list[tuple[Path, object]]:
    """Read all DICOM files with pixel data in ``folder`` (sorted by name)."""
    import pydicom

    slices = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if not is_dicom_file(path):
            continue
        try:
            dataset = pydicom.dcmread(path)
        except Exception as exc:
            raise CaseError(f"{path}: unreadable DICOM file ({type(exc).__name__}: {exc})") from exc
        if "PixelData" in dataset:
            slices.append((path, dataset))
    if not slices:
        raise CaseError(f"{folder}: empty DICOM folder (no DICOM images with pixel data)")
    return slices


def _slice_geometry(
    folder: Path, slices: list[tuple[Path, object]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row/column direction cosines shared by all slices, and each slice's position."""
    orientations, positions = [], []
    for path, ds in slices:
        for tag in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
            if tag not in ds:
                raise CaseError(f"{path}: DICOM file has no {tag} (cannot place it in space)")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise CaseError(f"{path}: multi-frame DICOM is not supported")
        orientations.append([float(v) for v in ds.ImageOrientationPatient])
        positions.append([float(v) for v in ds.ImagePositionPatient])
    orientations_arr = np.array(orientations)
    if not np.allclose(orientations_arr, orientations_arr[0], atol=1e-4):
        raise CaseError(f"{folder}: DICOM slices have different ImageOrientationPatient")
    row, col = orientations_arr[0, :3], orientations_arr[0, 3:]
    return row / np.linalg.norm(row), col / np.linalg.norm(col), np.array(positions)


def _pixels(path: Path, ds: object) -> np.ndarray:
    """One slice's rescaled pixels, transposed to (column index, row index)."""
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise CaseError(f"{path}: cannot decode DICOM pixel data ({type(exc).__name__}: {exc})") from exc
    if pixels.ndim != 2:
        raise CaseError(
            f"{path}: DICOM pixel data has shape {pixels.shape}; only single-frame greyscale is supported"
        )
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return (pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)).T


# Gaps may differ by rounding in the positions' decimal strings; beyond this share they are uneven.
GAP_TOLERANCE = 0.01


def _uneven(gaps: np.ndarray) -> bool:
    return bool(np.ptp(gaps) > GAP_TOLERANCE * max(float(np.median(gaps)), 1e-6))


def _even_grid(folder: Path, volume: np.ndarray, depths: np.ndarray, allow: bool) -> tuple[np.ndarray, np.ndarray]:
    """The volume on an even grid at the median gap (linear along the slice normal), or a CaseError."""
    gaps = np.diff(depths)
    median = float(np.median(gaps))
    if not allow:
        worst = float(np.max(np.abs(np.cumsum(gaps) - median * np.arange(1, len(gaps) + 1))))
        raise CaseError(
            f"{folder}: DICOM slices are unevenly spaced ({gaps.min():.3g} to {gaps.max():.3g} mm apart: a missing "
            f"slice?); an even grid would misplace slices by up to {worst:.3g} mm. Pass --allow-gaps to resample "
            "the series onto an even grid")
    count = int(round((depths[-1] - depths[0]) / median)) + 1
    even = depths[0] + median * np.arange(count)
    upper = np.clip(np.searchsorted(depths, even, side="right"), 1, len(depths) - 1)
    weight = ((even - depths[upper - 1]) / (depths[upper] - depths[upper - 1])).astype(np.float32)
    resampled = volume[..., upper - 1] * (1 - weight) + volume[..., upper] * weight
    logger.warning("%s: uneven DICOM slice gaps (%.3g..%.3g mm) resampled onto %d slices %.3g mm apart (--allow-gaps)",
                   folder, gaps.min(), gaps.max(), count, median)
    return resampled.astype(np.float32), even
