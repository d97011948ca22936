"""Reading images and cases with their geometry; writing label maps and probabilities.

Every read problem becomes a :class:`CaseError` naming the file, so the folder loop can
record it and move on. Every write is atomic (temp file in the same folder + rename).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .atomic import atomic_path
from .formats import FORMATS, IMAGE_SUFFIXES, image_suffix
from .geometry import CaseError, Geometry, check_geometry
from .limits import check_case_memory
from .readers.dicom import is_dicom_file, read_dicom_series
from .readers.metaimage import read_metaimage
from .readers.nifti import read_nifti
from .readers.nrrd import read_nrrd
from .readers.raster import read_raster
from .writers import write_metaimage_labels, write_nrrd_labels

if TYPE_CHECKING:
    from .cases import Case

__all__ = [
    "IMAGE_SUFFIXES",
    "CaseError",
    "Geometry",
    "image_suffix",
    "is_dicom_file",
    "read_case",
    "read_image",
    "write_labels",
    "write_probabilities",
]

# Tolerance for "the channels of one case share a grid" (mm); float32 headers differ slightly.
_AFFINE_ATOL = 1e-3


def read_image(
    path: str | os.PathLike[str], max_bytes: int | None = None, allow_gaps: bool = False
) -> tuple[np.ndarray, Geometry]:
    """Read one image file (or a DICOM series folder) with its geometry.

    Args:
        path: A NIfTI/NRRD/MetaImage/PNG/TIFF file, or a folder holding one DICOM series.
        max_bytes: Memory limit for decoding (checked on the header before any allocation;
            None: only the header-against-file check).
        allow_gaps: Accept a DICOM series with uneven slice gaps, resampled onto an even grid.

    Returns:
        The array as stored (Shape: [*S] or [*S, C_file] — a channel axis is present exactly
        when ``array.ndim == len(geometry.shape) + 1``) and its geometry.

    Raises:
        CaseError: Missing, unreadable, corrupt, truncated or unsupported input; a header
            claiming more voxels than the file holds or ``max_bytes`` allows.
    """
    data, geometry = _read(Path(path), max_bytes, allow_gaps)
    check_geometry(path, geometry)
    return data, geometry


def _read(path: Path, max_bytes: int | None, allow_gaps: bool) -> tuple[np.ndarray, Geometry]:
    if path.is_dir():
        return read_dicom_series(path, max_bytes, allow_gaps=allow_gaps)
    if not path.is_file():
        raise CaseError(f"{path}: no such file")
    suffix = image_suffix(path)
    if suffix is None:
        raise CaseError(
            f"{path}: unsupported image format (known: {', '.join(IMAGE_SUFFIXES)}, DICOM folders)"
        )
    fmt = FORMATS[suffix]
    try:
        if fmt == "nifti":
            return read_nifti(path, max_bytes)
        if fmt == "nrrd":
            return read_nrrd(path, max_bytes)
        if fmt == "mha":
            return read_metaimage(path, max_bytes)
        return read_raster(path, fmt)
    except CaseError:
        raise
    except Exception as exc:  # a reader bug or odd file must still name the file
        raise CaseError(f"{path}: cannot read {fmt} file ({type(exc).__name__}: {exc})") from exc


def read_case(
    case: Case, spatial_dims: int | tuple[int, ...], in_channels: int, max_bytes: int | None = None,
    allow_gaps: bool = False,
) -> tuple[np.ndarray, Geometry]:
    """Read all channel files of a case into one channel-first float32 array.

    A 3D image with a single slice is accepted by a 2D model (the slice axis is dropped;
    writers restore it from ``geometry.shape``).

    Args:
        case: The case (its ``paths`` in channel order).
        spatial_dims: The spatial rank(s) the model takes (2 or 3, or a tuple of them).
        in_channels: The number of channels the model expects.
        max_bytes: Memory limit per file (see :func:`read_image`).
        allow_gaps: See :func:`read_image`.

    Returns:
        The image (Shape: [C, *S], float32) and the geometry of its first file.

    Raises:
        CaseError: Read errors, wrong dimensionality, channel count mismatch, channels
            disagreeing in shape or affine, NaN/Inf values.
    """
    parts: list[np.ndarray] = []
    first: tuple[Path, Geometry] | None = None
    held = 0  # bytes of the files read so far: the next file may only use what they leave
    for path in case.paths:
        data, geometry = read_image(path, None if max_bytes is None else max(max_bytes - held, 0), allow_gaps)
        held += data.nbytes
        channels = data if data.ndim > len(geometry.shape) else data[..., None]
        channels = _match_dims(path, np.moveaxis(channels, -1, 0), geometry, spatial_dims)
        if first is None:
            first = (path, geometry)
        else:
            _check_same_grid(first, (path, geometry))
        if channels.dtype.kind not in "biuf":
            raise CaseError(f"{path}: {channels.dtype} voxels are not a scalar image (complex or structured data)")
        if channels.dtype.kind == "f" and not np.isfinite(channels).all():
            bad = int(np.size(channels) - np.count_nonzero(np.isfinite(channels)))
            raise CaseError(f"{path}: contains NaN or Inf values ({bad} voxels)")
        parts.append(channels)  # as stored (often Fortran-ordered): converted once, below
    if first is None:
        raise CaseError(f"case '{case.id}': no input files")
    count = sum(part.shape[0] for part in parts)
    if count != in_channels:
        names = ", ".join(p.name for p in case.paths)
        raise CaseError(
            f"case '{case.id}' ({names}): has {count} channel(s) but the model expects {in_channels}"
        )
    # One C-ordered float32 allocation: no float32 copy per file, no concatenation copy.
    shape = (count, *parts[0].shape[1:])
    check_case_memory(case.paths[0], held + 4 * math.prod(shape), max_bytes, "reading this case")
    image = np.empty(shape, dtype=np.float32)
    start = 0
    while parts:
        part = parts.pop(0)  # drop each file's array as soon as it is copied
        image[start : start + part.shape[0]] = part
        start += part.shape[0]
    return image, first[1]


def _match_dims(
    path: Path, channels: np.ndarray, geometry: Geometry, spatial_dims: int | tuple[int, ...]
) -> np.ndarray:
    """Check the image's spatial dimensionality against the model's; drop a lone slice axis."""
    ndim = len(geometry.shape)
    accepted = (spatial_dims,) if isinstance(spatial_dims, int) else tuple(spatial_dims)
    if ndim in accepted:
        return channels
    if ndim == 3 and 2 in accepted and geometry.shape[2] == 1:
        return channels[..., 0]
    wanted = " or ".join(f"{d}D" for d in accepted)
    raise CaseError(f"{path}: image is {ndim}D (shape {tuple(geometry.shape)}) but the model is {wanted}")


def _check_same_grid(first: tuple[Path, Geometry], other: tuple[Path, Geometry]) -> None:
    """Raise unless two channel files share shape and affine."""
    (path_a, geo_a), (path_b, geo_b) = first, other
    if tuple(geo_a.shape) != tuple(geo_b.shape):
        raise CaseError(f"{path_b}: shape {geo_b.shape} differs from {geo_a.shape} of {path_a.name}")
    if not np.allclose(geo_a.affine, geo_b.affine, atol=_AFFINE_ATOL, rtol=1e-5):
        raise CaseError(f"{path_b}: affine differs from that of {path_a.name} (channels must share one grid)")


def smallest_int_dtype(labels: np.ndarray) -> np.dtype:
    """The smallest integer dtype holding all values of ``labels``."""
    low = int(labels.min()) if labels.size else 0
    high = int(labels.max()) if labels.size else 0
    for dtype in (np.uint8, np.uint16) if low >= 0 else (np.int8, np.int16):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int32)


def write_labels(path: str | os.PathLike[str], labels: np.ndarray, geometry: Geometry) -> Path:
    """Write a label map atomically in the format its suffix names, with the input's geometry.

    PNG (``.png``, 2D, 8-bit, 16-bit when a value passes 255), NRRD (``.nrrd``), MetaImage (``.mha``) or NIfTI (anything else).

    Args:
        path: Destination (``.png``, ``.nrrd``, ``.mha`` or ``.nii.gz``/``.nii``).
        labels: Integer label map on the input grid. Shape: [*S] (S matching ``geometry.shape``,
            up to a dropped singleton slice axis).
        geometry: The input's geometry; for NIfTI inputs the qform/sform codes are copied.

    Returns:
        The written path.
    """
    path = Path(path)
    labels = _on_stored_grid(np.asarray(labels), geometry)
    labels = labels.astype(smallest_int_dtype(labels), copy=False)
    name = path.name.lower()
    if name.endswith(".png"):
        _write_png(path, labels)
    elif name.endswith(".nrrd"):
        write_nrrd_labels(path, labels, geometry)
    elif name.endswith(".mha"):
        write_metaimage_labels(path, labels, geometry)
    else:
        _write_nifti(path, labels, geometry)
    return path


def write_probabilities(path: str | os.PathLike[str], probabilities: np.ndarray, geometry: Geometry) -> Path:
    """Write class probabilities atomically.

    ``.npz`` (2D models): key ``probabilities``, float16, Shape: [K, *S]. NIfTI (3D): 4D
    with classes last; NIfTI has no float16, so values are stored as uint8 with
    ``scl_slope = 1/255`` (readers that apply the scaling get [0, 1] floats).

    Args:
        path: Destination (``.npz`` or ``.nii.gz``).
        probabilities: Per-class probabilities on the input grid. Shape: [K, *S].
        geometry: The input's geometry.

    Returns:
        The written path.
    """
    path = Path(path)
    probabilities = np.asarray(probabilities)
    if path.name.lower().endswith(".npz"):
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, probabilities=probabilities.astype(np.float16, copy=False))
        return path
    quantised = np.empty((*geometry.shape, len(probabilities)), np.uint8)
    for index, channel in enumerate(probabilities):  # one float32 channel at a time
        scaled = np.clip(_on_stored_grid(channel, geometry).astype(np.float32), 0.0, 1.0) * 255.0
        quantised[..., index] = np.rint(scaled, out=scaled)
    image = _nifti_image(quantised, geometry)
    image.header.set_slope_inter(1.0 / 255.0, 0.0)
    with atomic_path(path) as tmp:
        image.to_filename(str(tmp))
    return path


def _on_stored_grid(array: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Reshape to the stored spatial shape (restores a dropped singleton slice axis)."""
    shape = tuple(geometry.shape)
    if array.shape == shape:
        return array
    if array.size != int(np.prod(shape)):
        raise ValueError(f"array of shape {array.shape} does not fit the input grid {shape}")
    return array.reshape(shape)


def _write_png(path: Path, labels: np.ndarray) -> None:
    """Write a 2D greyscale PNG: 8-bit, or 16-bit when a value passes 255."""
    from PIL import Image

    if labels.ndim != 2 or labels.min(initial=0) < 0 or labels.max(initial=0) > 65535:
        raise ValueError(f"{path}: PNG labels must be 2D with values 0..65535")
    dtype = np.uint8 if labels.max(initial=0) <= 255 else np.uint16
    with atomic_path(path) as tmp:
        Image.fromarray(labels.astype(dtype)).save(tmp, format="PNG")


def _write_nifti(path: Path, data: np.ndarray, geometry: Geometry) -> None:
    """Write ``data`` as NIfTI with the geometry's affine."""
    with atomic_path(path) as tmp:
        _nifti_image(data, geometry).to_filename(str(tmp))


def _nifti_image(data: np.ndarray, geometry: Geometry) -> object:
    """A Nifti1Image with exactly the input affine and, for NIfTI inputs, its codes."""
    import nibabel as nib

    image = nib.Nifti1Image(data, geometry.affine)
    header = geometry.header
    if isinstance(header, nib.Nifti1Header):
        sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
        image.set_sform(geometry.affine, code=sform_code)
        # Re-encode the stored quaternion rather than the sform (which may carry shears).
        image.set_qform(header.get_qform() if qform_code else geometry.affine, code=qform_code)
        image.header.set_xyzt_units(*header.get_xyzt_units())
    else:
        image.set_sform(geometry.affine, code=1)
        image.set_qform(geometry.affine, code=1)
        image.header.set_xyzt_units("mm")
    return image
