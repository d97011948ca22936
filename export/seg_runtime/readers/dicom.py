"""DICOM series folder → 3D volume (one series per folder), via pydicom.

The volume's axes are (column index, row index, slice): the first follows
ImageOrientationPatient's row direction, the second its column direction, the third the
slice normal, with slices sorted by their position along that normal. Each slice keeps its own
ImagePositionPatient, so a gantry-tilted series (slices stepping along the table, not their
normal) gets a sheared affine.

Which files form the volume is decided once, by :func:`series_slices` (the reader and the DICOM-SEG
and RTSTRUCT writers share it, so a result references exactly the slices that were read):
single-frame images of one series; localizers (ImageType LOCALIZER) and multi-frame objects
(Enhanced CT/MR, NumberOfFrames > 1) are left out with a warning, never mixed into the volume; a
series whose slices disagree on PatientID, StudyInstanceUID or FrameOfReferenceUID is refused.
Headers are read first and the volume's size checked against the memory limit before any pixel is
decoded; pixels are then decoded one slice at a time into the volume.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry import LPS_SIGNS, CaseError, Geometry, affine_from_axes, make_geometry
from ..limits import check_memory

logger = logging.getLogger(__name__)

_MAGIC_OFFSET = 128
IDENTITY = ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID")


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


def left_out(ds: Any) -> str | None:
    """Why an image never enters a volume (a localizer, a multi-frame object), else None."""
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "LOCALIZER" in image_type:
        return "a localizer (ImageType LOCALIZER)"
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return f"a multi-frame object ({int(ds.NumberOfFrames)} frames; Enhanced/multi-frame is not supported)"
    return None


@dataclass
class Series:
    """The slices of one series, sorted along the slice normal (headers only, no pixels).

    Attributes:
        folder: The series folder.
        slices: ``(path, header)`` per slice, in volume order.
        row, col: The unit row and column direction cosines (LPS).
        positions: Each slice's ImagePositionPatient (LPS, mm). Shape: [Z, 3].
        skipped: ``(path, reason)`` of the images left out.
    """

    folder: Path
    slices: list[tuple[Path, Any]]
    row: np.ndarray
    col: np.ndarray
    positions: np.ndarray
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def series_slices(folder: Path) -> Series:
    """The images of the series in ``folder`` that form its volume, sorted, checked, headers only.

    Raises:
        CaseError: No single-frame images, several series, slices of different patients, studies or
            frames of reference, unreadable files, missing geometry, two slices at one position.
    """
    images, skipped = _headers(folder)
    for path, reason in skipped:
        logger.warning("%s: left out of the volume: %s", path, reason)
    if not images:
        detail = f" ({len(skipped)} left out: {skipped[0][1]})" if skipped else ""
        raise CaseError(f"{folder}: empty DICOM folder (no single-frame DICOM images with pixel data){detail}")
    uids = sorted({str(ds.get("SeriesInstanceUID", "")) for _, ds in images})
    if len(uids) > 1:
        raise CaseError(
            f"{folder}: mixed DICOM series ({len(uids)} SeriesInstanceUIDs: {', '.join(uids[:3])}"
            f"{', ...' if len(uids) > 3 else ''}); put each series in its own folder"
        )
    for keyword in IDENTITY:
        values = sorted({str(ds.get(keyword, "")) for _, ds in images})
        if len(values) > 1:
            raise CaseError(f"{folder}: the series' images disagree on {keyword} ({', '.join(values[:3])}); "
                            "refusing to combine them")
    row, col, positions = _slice_geometry(folder, images)
    order = np.argsort(positions @ np.cross(row, col), kind="stable")
    depths = positions[order] @ np.cross(row, col)
    if len(depths) > 1 and np.min(np.diff(depths)) < 1e-4:
        raise CaseError(
            f"{folder}: several DICOM slices share one position (multiple acquisitions in one series?)"
        )
    return Series(folder, [images[i] for i in order], row, col, positions[order], skipped)


def _headers(folder: Path) -> tuple[list[tuple[Path, Any]], list[tuple[Path, str]]]:
    """Headers of the files with pixel data in ``folder`` (sorted by name), and those left out."""
    import pydicom

    images, skipped = [], []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if not is_dicom_file(path):
            continue
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:
            raise CaseError(f"{path}: unreadable DICOM file ({type(exc).__name__}: {exc})") from exc
        if "Rows" not in dataset or "Columns" not in dataset:
            continue  # not an image (a SEG/RTSTRUCT/SR beside the series is no slice)
        reason = left_out(dataset)
        if reason:
            skipped.append((path, reason))
        else:
            images.append((path, dataset))
    return images, skipped


def read_dicom_series(
    folder: Path, max_bytes: int | None = None, allow_gaps: bool = False
) -> tuple[np.ndarray, Geometry]:
    """Read the DICOM images in ``folder`` as one volume.

    Slices must be evenly spaced along their normal (a missing slice would otherwise be hidden in a
    mean gap, misplacing every slice after it by millimetres): uneven gaps fail the series, or with
    ``allow_gaps`` the slices are resampled (linearly along the normal) onto an even grid at the
    median gap, so each voxel sits where it was acquired.

    Args:
        folder: A folder holding the slices of exactly one series.
        max_bytes: Memory limit for the volume (checked on the headers before any pixel is decoded).
        allow_gaps: Resample a series with uneven gaps instead of refusing it.

    Returns:
        The rescaled volume (Shape: [X, Y, Z], float32) and its RAS+ geometry.

    Raises:
        CaseError: See :func:`series_slices`; undecodable pixels, slices of different sizes, a volume
            over ``max_bytes``.
    """
    series = series_slices(folder)
    slices = series.slices
    first = slices[0][1]
    shape = (int(first.Columns), int(first.Rows), len(slices))
    check_memory(folder, "the DICOM series", shape, 4 * int(np.prod(shape, dtype=np.int64)), max_bytes)
    volume = np.empty(shape, np.float32)
    for index, (path, header) in enumerate(slices):
        if (int(header.Columns), int(header.Rows)) != shape[:2]:
            raise CaseError(f"{path}: slice size {header.Columns} x {header.Rows} differs from "
                            f"{shape[0]} x {shape[1]} in {folder}")
        volume[:, :, index] = _pixels(path)
    depths = series.positions @ np.cross(series.row, series.col)
    if len(slices) > 1 and _uneven(np.diff(depths)):
        volume, depths = _even_grid(folder, volume, depths, allow_gaps)
    return volume, series_geometry(series, depths)


def series_geometry(series: Series, depths: np.ndarray | None = None) -> Geometry:
    """The RAS+ geometry of a series' volume, from its headers alone (the reader's and the service's
    memory estimate's one computation).

    Args:
        series: The series.
        depths: The slices' positions along the normal (mm) when the volume was resampled onto an even
            grid (:func:`read_dicom_series` with ``allow_gaps``); default: the acquired slices.
    """
    slices, positions, normal = series.slices, series.positions, np.cross(series.row, series.col)
    first = slices[0][1]
    spacing = [float(v) for v in first.PixelSpacing]
    acquired = positions @ normal
    depths = acquired if depths is None else depths
    if len(slices) > 1:
        # The slices' advance per mm along the normal (not the normal itself: a gantry tilt shears it).
        direction = (positions[-1] - positions[0]) / (acquired[-1] - acquired[0])
        step = direction * (depths[-1] - depths[0]) / (len(depths) - 1)
    else:
        thickness = first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0
        step = normal * float(thickness)
    # PixelSpacing is (between rows, between columns): rows advance along the column direction.
    axes = np.stack([series.row * spacing[1], series.col * spacing[0], step], axis=1)
    affine = affine_from_axes(axes, positions[0], LPS_SIGNS)
    return make_geometry(affine, (int(first.Columns), int(first.Rows), len(depths)), "dicom")


def _slice_geometry(folder: Path, slices: list[tuple[Path, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row/column direction cosines shared by all slices, and each slice's position."""
    orientations, positions = [], []
    for path, ds in slices:
        for tag in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
            if not ds.get(tag):
                raise CaseError(f"{path}: DICOM file has no {tag} (cannot place it in space)")
        orientations.append([float(v) for v in ds.ImageOrientationPatient])
        positions.append([float(v) for v in ds.ImagePositionPatient])
    orientations_arr = np.array(orientations)
    if not np.allclose(orientations_arr, orientations_arr[0], atol=1e-4):
        raise CaseError(f"{folder}: DICOM slices have different ImageOrientationPatient")
    row, col = orientations_arr[0, :3], orientations_arr[0, 3:]
    return row / np.linalg.norm(row), col / np.linalg.norm(col), np.array(positions)


def _pixels(path: Path) -> np.ndarray:
    """One slice's rescaled pixels, transposed to (column index, row index)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise CaseError(f"{path}: unreadable DICOM file ({type(exc).__name__}: {exc})") from exc
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        syntax = ds.file_meta.get("TransferSyntaxUID")
        where = f" in transfer syntax {syntax.name}" if syntax else ""
        raise CaseError(f"{path}: cannot decode DICOM pixel data{where} ({type(exc).__name__}: {exc})") from exc
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
