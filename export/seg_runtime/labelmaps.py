"""Label maps read once, one way: as a spatial integer array, raw file values mapped to classes.

Every reader of a label file (training, the data check, the planner, ``seg evaluate``, the CV's
post-processing choice, the demo's scores) goes through :func:`read_label_map`, and every mapping
of raw values (ISBI's 0/255) to class indices through :func:`remap_values`; predictions go back to
the dataset's values through :func:`value_lut` (a bundle's ``label_values``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from .geometry import Geometry
from .io import read_image


def spatial_label(array: np.ndarray, geometry: Geometry, spatial_dims: int | None = None) -> np.ndarray:
    """A label array as stored, reduced to its spatial axes.

    A channel axis (an RGB or grey+alpha PNG, a 4D NIfTI) keeps its first channel; for a 2D model a
    one-slice volume loses its slice axis.

    Shape: [*S] or [*S, C] -> [*S]
    """
    array = np.asarray(array)
    if array.ndim > len(geometry.shape):
        array = array[..., 0]
    if spatial_dims == 2 and array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return array


def read_label_map(
    path: str | os.PathLike[str], spatial_dims: int | None = None
) -> tuple[np.ndarray, Geometry]:
    """Read a label file (any image format the runtime reads) as a spatial array and its geometry.

    Raises:
        CaseError: the file is missing or cannot be read (the message names it).
    """
    array, geometry = read_image(path)
    return spatial_label(array, geometry, spatial_dims), geometry


def remap_values(label: np.ndarray, label_values: Mapping[int, int] | None) -> np.ndarray:
    """Raw label values -> class indices (int16); values outside ``label_values`` become 0.

    Without ``label_values`` the values are the class indices already. Float label files (BraTS
    ships float64) are rounded first.

    Shape: [*S] -> [*S]
    """
    label = np.asarray(label)
    if label.dtype.kind == "f":
        label = np.rint(label)
    if not label_values:
        return label.astype(np.int16)
    out = np.zeros(label.shape, dtype=np.int16)
    for raw, cls in label_values.items():
        out[label == raw] = cls
    return out


def value_lut(labels: Mapping[str, int], label_values: Mapping[str, int]) -> np.ndarray | None:
    """Class index -> the value the dataset's label files use for it, or None when those are the
    class indices (no ``label_values``, or the identity). Shape: [max index + 1], uint8 or uint16.

    A label map ``m`` of class indices is written as ``lut[m]``; read back, ``remap_values(file,
    {v: i for i, v in enumerate(lut)})`` gives the indices again.
    """
    if not label_values or all(label_values[name] == index for name, index in labels.items()):
        return None
    lut = np.zeros(max(labels.values()) + 1, dtype=np.int64)
    for name, index in labels.items():
        lut[index] = label_values[name]
    return lut.astype(np.uint8 if lut.max() <= 255 else np.uint16)
