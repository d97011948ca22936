"""The one table of image file formats: which suffixes the runtime reads, and what it writes.

Every part of ``seg`` and ``seg_runtime`` that asks "is this an image file, and which format?"
(case discovery, the readers, ``seg evaluate``, the dataset layouts) asks here, so a file one
tool reads is never skipped by another. Matching is case-insensitive (``scan.NRRD`` is NRRD).
"""

from __future__ import annotations

import os
from pathlib import Path

# Suffix -> format; the longest suffix is tried first (".nii.gz" before ".nii").
FORMATS: dict[str, str] = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "mha",
    ".mhd": "mha",
    ".png": "png",
    ".tiff": "tiff",
    ".tif": "tiff",
}
IMAGE_SUFFIXES: tuple[str, ...] = tuple(sorted(FORMATS, key=len, reverse=True))
RASTER_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff")
# ``--output-format`` choices; ``auto`` writes each case in its input's format.
OUTPUT_FORMATS: tuple[str, ...] = ("auto", "nii.gz", "nrrd", "mha", "png")
# The label-map suffix written for each input format under ``auto`` (DICOM series -> NIfTI).
_AUTO_OUTPUT = {
    "nifti": ".nii.gz",
    "nrrd": ".nrrd",
    "mha": ".mha",
    "png": ".png",
    "tiff": ".png",
    "dicom": ".nii.gz",
}


def image_suffix(path: str | os.PathLike[str]) -> str | None:
    """The recognised image suffix of ``path`` in lower case (e.g. ``.nii.gz``), else None."""
    name = Path(path).name.lower()
    return next((suffix for suffix in IMAGE_SUFFIXES if name.endswith(suffix)), None)


def image_format(path: str | os.PathLike[str]) -> str | None:
    """The format name (``nifti``, ``nrrd``, ``mha``, ``png``, ``tiff``) of ``path``, else None."""
    suffix = image_suffix(path)
    return None if suffix is None else FORMATS[suffix]


def strip_image_suffix(path: str | os.PathLike[str]) -> str:
    """The file name without its image suffix (``a.NII.GZ`` -> ``a``); other names lose ``.ext``."""
    path = Path(path)
    suffix = image_suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix else path.stem


def output_suffix(source_format: str, spatial_dims: int, output_format: str = "auto") -> str:
    """The label-map suffix for a case read from ``source_format``.

    Args:
        source_format: The input's format (as :func:`image_format`, or ``dicom``).
        spatial_dims: The model's spatial dims; PNG output is 2D only.
        output_format: One of :data:`OUTPUT_FORMATS`.

    Raises:
        ValueError: An unknown ``output_format``, or ``png`` for a 3D model.
    """
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}; got {output_format!r}")
    if output_format == "png" and spatial_dims != 2:
        raise ValueError("output format 'png' is for 2D models only (this model is 3D)")
    if output_format != "auto":
        return f".{output_format}"
    suffix = _AUTO_OUTPUT.get(source_format, ".nii.gz")
    return ".nii.gz" if suffix == ".png" and spatial_dims != 2 else suffix
