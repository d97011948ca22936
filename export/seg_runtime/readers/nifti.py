"""NIfTI-1/2 (``.nii``, ``.nii.gz``) via nibabel."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..geometry import CaseError, Geometry, make_geometry


def read_nifti(path: Path) -> tuple[np.ndarray, Geometry]:
    """Read a NIfTI image with its affine and header.

    A 4D image holds channels on the last axis (NIfTI's "time" axis); a 5D image with a
    singleton 4th axis holds them on the 5th (NIfTI's vector-intent layout).

    Args:
        path: The ``.nii`` or ``.nii.gz`` file.

    Returns:
        The array (Shape: [*S] or [*S, C]) and its geometry (``header`` is the nibabel header).

    Raises:
        CaseError: The file is not a readable NIfTI image, or has more than 5 dimensions.
    """
    import nibabel as nib

    try:
        image = nib.load(str(path))
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
