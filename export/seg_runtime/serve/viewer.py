"""The web page's volumes: the scan and its label map as bytes a browser can slice in three planes.

Made once per job, on the page's first request, and kept in the job's output folder
(``view.json`` + ``view.bin.gz``): the first input channel windowed to 8 bits (0.5th-99.5th
percentile) and the label map, both turned to RAS+ axis order (the closest axes of the affine,
flips only, as the preview does) and thinned to at most :data:`MAX_SIDE` voxels per axis. The page
receives the gzip file with ``Content-Encoding: gzip`` and draws the planes itself, so moving a
slider costs no request.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_bytes, atomic_write_json
from ..io import read_case, read_image
from ..store import Entry
from .jobs import job_case
from .models import ServedModel
from .results import label_file

MAX_SIDE = 256
VIEW_META, VIEW_DATA = "view.json", "view.bin.gz"


def to_ras(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 3D array in RAS+ axis order (axes permuted and flipped, never resampled).

    Returns:
        The array and the voxel spacing of its axes. Shape: [X, Y, Z].
    """
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    transform = ornt_transform(io_orientation(affine), axcodes2ornt(("R", "A", "S")))
    spacing = np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(axis=0))
    moved = np.zeros(3)
    for axis, (target, _) in enumerate(transform):
        moved[int(target)] = spacing[axis]
    return np.ascontiguousarray(apply_orientation(volume, transform)), moved


def window(image: np.ndarray) -> np.ndarray:
    """Grey values to 8 bits between the 0.5th and 99.5th percentiles."""
    values = image[np.isfinite(image)]
    if values.size == 0:
        return np.zeros(image.shape, np.uint8)
    low, high = np.percentile(values, [0.5, 99.5])
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.clip((image.astype(np.float32) - low) * scale, 0, 255).astype(np.uint8)


def view_volumes(entry: Entry, model: ServedModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scan (uint8) and labels (uint8) in RAS+ order, thinned, with their spacing.

    Returns:
        Image and labels (Shape: [X, Y, Z]) and spacing (mm per voxel, after thinning).
    """
    bundle = model.bundle
    image, geometry = read_case(job_case(entry), bundle.spatial_dims, bundle.in_channels)
    labels, _ = read_image(label_file(entry))
    first = window(image[0])
    labels = np.asarray(labels)
    if first.ndim == 2:  # raster: rows down, columns right -> x right, y up, one slice
        first, labels = first[::-1, :].T[..., None], labels.reshape(first.shape)[::-1, :].T[..., None]
        spacing = np.ones(3)
    else:
        labels = labels.reshape(first.shape)
        first, spacing = to_ras(first, geometry.affine)
        labels, _ = to_ras(labels, geometry.affine)
    step = [max(1, -(-s // MAX_SIDE)) for s in first.shape]
    thin = tuple(slice(None, None, s) for s in step)
    return first[thin], np.clip(labels[thin], 0, 255).astype(np.uint8), spacing * np.asarray(step)


def ensure_view(entry: Entry, model: ServedModel) -> dict[str, Any]:
    """The view's description (made on first use): shape, spacing, classes."""
    meta_path, data_path = entry.output_dir / VIEW_META, entry.output_dir / VIEW_DATA
    if meta_path.is_file() and data_path.is_file():
        return json.loads(meta_path.read_text(encoding="utf-8"))
    image, labels, spacing = view_volumes(entry, model)
    atomic_write_bytes(data_path, gzip.compress(image.tobytes(order="F") + labels.tobytes(order="F"), 6))
    meta = {"shape": [int(s) for s in image.shape], "spacing": [round(float(s), 4) for s in spacing],
            "order": "F", "classes": model.classes(), "data": f"/v1/jobs/{entry.id}/view/data"}
    atomic_write_json(meta_path, meta)
    return meta


def view_data(entry: Entry) -> Path:
    """The gzip file of the view (image bytes, then label bytes, both Fortran order)."""
    return entry.output_dir / VIEW_DATA
