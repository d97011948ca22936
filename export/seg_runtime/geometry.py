"""Image geometry (voxel → world mapping) and the per-case error type.

World coordinates follow nibabel's RAS+ convention (+x Right, +y Anterior, +z Superior).
DICOM, NRRD ``left-posterior-superior`` and MetaImage store LPS+ world coordinates
(+x Left, +y Posterior); they are converted by negating the first two world axes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import SegError

# Sign of each LPS+ world axis in RAS+: negate x and y, keep z.
LPS_SIGNS = (-1.0, -1.0, 1.0)


class CaseError(SegError, ValueError):
    """A problem with one case's input (unreadable, wrong shape, bad values, ...).

    The message always names the offending file or folder, so a run manifest entry is
    actionable on its own.
    """


@dataclass
class Geometry:
    """Where an image's voxels sit in the world, and how it was stored.

    Attributes:
        affine: 4x4 voxel-index → world (RAS+, millimetres) matrix; identity for PNG/TIFF.
        shape: Spatial shape as stored in the file (no channel axis).
        spacing: Voxel size per spatial axis (column norms of the affine).
        source_format: One of ``nifti``, ``nrrd``, ``mha``, ``dicom``, ``png``, ``tiff``.
        header: Format header to reuse on write (the nibabel header for NIfTI), else None.
    """

    affine: np.ndarray
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    source_format: str
    header: object | None = field(default=None, repr=False)


def spacing_from_affine(affine: np.ndarray, ndim: int) -> tuple[float, ...]:
    """Voxel sizes of the first ``ndim`` axes: the norms of the affine's columns."""
    norms = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :ndim] ** 2).sum(axis=0))
    return tuple(float(v) for v in norms)


def affine_from_axes(
    axes: np.ndarray, origin: np.ndarray, world_signs: tuple[float, float, float] = (1.0, 1.0, 1.0)
) -> np.ndarray:
    """Build a RAS+ 4x4 affine from per-axis world steps and an origin.

    Args:
        axes: World displacement of one step along each voxel axis (direction x spacing), as
            columns. Shape: [W, N] with world dims W and voxel dims N (each 2 or 3).
        origin: World position of voxel (0, ..., 0). Shape: [W].
        world_signs: Sign of each world axis relative to RAS+ (``LPS_SIGNS`` for LPS+ data).

    Returns:
        The 4x4 RAS+ affine; 2D images get a unit third axis.
    """
    axes = np.asarray(axes, dtype=np.float64)
    world, ndim = axes.shape
    affine = np.eye(4)
    affine[:world, :ndim] = axes
    affine[:world, 3] = np.asarray(origin, dtype=np.float64)[:world]
    return np.diag([*world_signs, 1.0]) @ affine


def make_geometry(
    affine: np.ndarray, shape: tuple[int, ...], source_format: str, header: object | None = None
) -> Geometry:
    """Assemble a :class:`Geometry`, deriving the spacing from the affine."""
    shape = tuple(int(s) for s in shape)
    return Geometry(
        affine=np.asarray(affine, dtype=np.float64),
        shape=shape,
        spacing=spacing_from_affine(affine, min(len(shape), 3)),
        source_format=source_format,
        header=header,
    )


def check_geometry(path: object, geometry: Geometry) -> None:
    """Raise when an image's voxel grid cannot be placed in space.

    A non-finite affine, a zero or non-finite spacing, or axes that are not independent (a singular
    affine: two axes along one direction, or a zero column) would resample into nonsense. A sheared
    but regular affine (a CT with gantry tilt) is fine.

    Raises:
        CaseError: naming the file and the problem.
    """
    affine = np.asarray(geometry.affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise CaseError(f"{path}: the image's affine (voxel-to-world matrix) holds NaN or Inf; check its header")
    spacing = np.asarray(geometry.spacing, dtype=np.float64)
    if spacing.size and not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise CaseError(f"{path}: voxel spacing {tuple(float(s) for s in spacing)} mm has a zero axis; check the "
                        "header's pixel dimensions")
    axes = affine[:3, :3] / np.maximum(np.linalg.norm(affine[:3, :3], axis=0), 1e-300)
    if abs(float(np.linalg.det(axes))) < 1e-6:
        raise CaseError(f"{path}: the image's affine is singular (its voxel axes are not independent, so the "
                        "grid cannot be placed in space); check the header's orientation (sform/qform)")
