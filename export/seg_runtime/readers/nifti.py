"""NIfTI-1/2 (``.nii``, ``.nii.gz``) via nibabel."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..geometry import CaseError, Geometry, make_geometry
from ..limits import check_claimed_size, check_memory


def read_nifti(path: Path, max_bytes: int | None = None) -> tuple[np.ndarray, Geometry]:
    """Read a NIfTI image with its affine and header.

    A 4D image holds channels on the last axis (NIfTI's "time" axis); a 5D image with a
    singleton 4th axis holds them on the 5th (NIfTI's vector-intent layout).

    Args:
        path: The ``.nii`` or ``.nii.gz`` file.
        max_bytes: Memory limit for the decoded image (checked on the header, before reading).

    Returns:
        The array (Shape: [*S] or [*S, C]) and its geometry (``header`` is the nibabel header).

    Raises:
        CaseError: The file is not a readable NIfTI image, has more than 5 dimensions, or its
            header claims more voxels than the file holds or the memory limit allows.
    """
    import nibabel as nib

    try:
        image = nib.load(str(path))
    except Exception as exc:
        raise CaseError(f"{path}: cannot read NIfTI file ({type(exc).__name__}: {exc})") from exc
    _check_header_size(path, image, max_bytes)
    try:
        # Reading eagerly surfaces truncated/corrupt payloads here, not mid-inference.
        data = np.asarray(image.dataobj)
    except Exception as exc:
        raise CaseError(f"{path}: cannot read NIfTI file ({type(exc).__name__}: {exc})") from exc
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]
    if data.ndim > 4:
        raise CaseError(f"{path}: unsupported NIfTI shape {data.shape} (expected 2D, 3D or 3D + channels)")
    spatial = data.shape[:3] if data.ndim == 4 else data.shape
    return data, make_geometry(image.affine, spatial, "nifti", image.header)


def _check_header_size(path: Path, image: object, max_bytes: int | None) -> None:
    """Fail before nibabel allocates the header's shape: it must fit the file and the limit."""
    shape = tuple(int(s) for s in image.shape)
    itemsize = np.dtype(image.get_data_dtype()).itemsize
    size = path.stat().st_size
    compressed = path.name.lower().endswith(".gz")
    offset = 0 if compressed else int(image.header["vox_offset"])
    check_claimed_size(path, shape, itemsize, max(size - offset, 0), compressed=compressed)
    # As stored, plus the float32 copy the case is assembled into.
    check_memory(path, "the image", shape, int(np.prod(shape, dtype=np.float64)) * (itemsize + 4), max_bytes)
