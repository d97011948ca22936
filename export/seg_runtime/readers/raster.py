"""PNG and TIFF via pillow (2D images; grey → 1 channel, colour → 3 channels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..geometry import CaseError, Geometry, make_geometry

# Pillow modes read as one grey channel with their native precision.
_GREY_MODES = {"L", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}


def read_raster(path: Path, source_format: str) -> tuple[np.ndarray, Geometry]:
    """Read a single-frame PNG/TIFF.

    Alpha is dropped and palette/other colour modes become RGB; axes stay (H, W) as stored
    and the affine is the identity (raster images carry no world geometry).

    Args:
        path: The image file.
        source_format: ``png`` or ``tiff`` (recorded in the geometry).

    Returns:
        The array (Shape: [H, W] or [H, W, 3]) and its geometry.

    Raises:
        CaseError: Unreadable/truncated file, or a multi-frame TIFF.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            if getattr(image, "n_frames", 1) > 1:
                raise CaseError(f"{path}: multi-frame image ({image.n_frames} frames) is not supported")
            image.load()
            data = _to_array(image)
    except CaseError:
        raise
    except Exception as exc:
        raise CaseError(
            f"{path}: cannot read {source_format.upper()} file ({type(exc).__name__}: {exc})"
        ) from exc
    return data, make_geometry(np.eye(4), data.shape[:2], source_format)


def _to_array(image: object) -> np.ndarray:
    """Convert a loaded pillow image to a grey [H, W] or RGB [H, W, 3] array."""
    mode = image.mode
    if mode in _GREY_MODES:
        return np.asarray(image)
    if mode in {"1", "LA"}:
        return np.asarray(image.convert("L"))
    return np.asarray(image.convert("RGB"))
