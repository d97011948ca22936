"""Label-map writers for NRRD and MetaImage, so a case comes back in its input's format.

Both store world coordinates in LPS+ (ITK/Slicer convention); the RAS+ affine of the input's
:class:`Geometry` is converted back, so spacing, origin and direction round-trip through the
runtime's readers. Payloads are compressed (label maps are mostly zeros) and every write is
atomic. NIfTI and PNG writers live in :mod:`seg_runtime.io`.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes
from .geometry import LPS_SIGNS, Geometry

_NRRD_TYPES = {"u1": "uchar", "u2": "ushort", "i1": "signed char", "i2": "short", "i4": "int", "u4": "uint"}
_MET_TYPES = {"u1": "MET_UCHAR", "u2": "MET_USHORT", "i1": "MET_CHAR", "i2": "MET_SHORT", "i4": "MET_INT",
              "u4": "MET_UINT"}


def _lps_axes(geometry: Geometry, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """World steps per voxel axis (columns, Shape: [3, ndim]) and the origin, in LPS+."""
    lps = np.diag(LPS_SIGNS) @ np.asarray(geometry.affine, dtype=np.float64)[:3]
    return lps[:, :ndim], lps[:, 3]


def _numbers(values: np.ndarray) -> list[str]:
    return [repr(float(v)) for v in values]


def _little_endian(labels: np.ndarray) -> bytes:
    """Fortran-order (fastest axis first) little-endian bytes, as both formats store voxels."""
    return labels.astype(labels.dtype.newbyteorder("<"), copy=False).tobytes(order="F")


def write_nrrd_labels(path: Path, labels: np.ndarray, geometry: Geometry) -> None:
    """Write an integer label map as gzip NRRD (``space: left-posterior-superior``).

    Shape: labels [*S] with S the stored spatial shape of ``geometry``.
    """
    ndim = labels.ndim
    steps, origin = _lps_axes(geometry, ndim)
    header = [
        "NRRD0004",
        "# label map written by seg_runtime",
        f"type: {_NRRD_TYPES[labels.dtype.str[1:]]}",
        f"dimension: {ndim}",
        "space: left-posterior-superior",
        "sizes: " + " ".join(str(s) for s in labels.shape),
        "space directions: " + " ".join("(" + ",".join(_numbers(steps[:, i])) + ")" for i in range(ndim)),
        "kinds: " + " ".join(["domain"] * ndim),
        "endian: little",
        "encoding: gzip",
        "space origin: (" + ",".join(_numbers(origin)) + ")",
    ]
    payload = gzip.compress(_little_endian(labels), compresslevel=6, mtime=0)
    atomic_write_bytes(path, ("\n".join(header) + "\n\n").encode("ascii") + payload)


def write_metaimage_labels(path: Path, labels: np.ndarray, geometry: Geometry) -> None:
    """Write an integer label map as a MetaImage with attached zlib data (``.mha``).

    Shape: labels [*S] with S the stored spatial shape of ``geometry``. 2D label maps keep the
    in-plane part of the direction matrix.
    """
    ndim = labels.ndim
    steps, origin = _lps_axes(geometry, ndim)
    steps, origin = steps[:ndim], origin[:ndim]
    spacing = np.linalg.norm(steps, axis=0)
    directions = steps / np.where(spacing > 0, spacing, 1.0)
    payload = zlib.compress(_little_endian(labels), 6)
    lines = [
        "ObjectType = Image",
        f"NDims = {ndim}",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CompressedData = True",
        f"CompressedDataSize = {len(payload)}",
        # ITK reads element i * N + j as component j of axis i: axes are rows here.
        "TransformMatrix = " + " ".join(_numbers(directions.T.ravel())),
        "Offset = " + " ".join(_numbers(origin)),
        "ElementSpacing = " + " ".join(_numbers(spacing)),
        "DimSize = " + " ".join(str(s) for s in labels.shape),
        f"ElementType = {_MET_TYPES[labels.dtype.str[1:]]}",
        "ElementDataFile = LOCAL",
    ]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("ascii") + payload)
