"""Quick-look PNGs: the label map coloured over the first input channel (pillow + numpy only).

3D cases show a few axial slices spread over the predicted foreground's extent (the whole
volume when nothing was found), reoriented to RAS and drawn in the radiological convention
(anterior up, the patient's right on the image's left) at their physical aspect ratio. 2D
cases show the image as stored. Background (label 0) stays grey, so every coloured pixel is a
predicted label. Each slice is titled with its index in the file as stored (``axial z=37/155``:
voxel index 37 of 155 along the stored axis ``z``), its edges carry the patient's direction
(``R``/``L``, ``A``/``P``, computed from the affine), and a legend under the slices names the
colour of each label in the case (``1 lesion``); see :mod:`seg_runtime.preview_layout`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .geometry import Geometry
from .preview_layout import Layout, Panel, draw_layout, font_and_metrics, layout_preview

logger = logging.getLogger(__name__)

PREVIEW_DIR = "preview"
# Distinct, saturated colours for labels 1, 2, ... (cycled beyond ten classes).
PALETTE = np.array(
    [
        (230, 25, 75),
        (60, 180, 75),
        (0, 130, 200),
        (255, 225, 25),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (0, 128, 128),
    ],
    dtype=np.float32,
)
_ALPHA = 0.45
_GAP = 4
# Panels are enlarged by a whole factor until their longer side reaches this many pixels.
_MIN_SIDE = 192


def preview_path(output_dir: str | os.PathLike[str], case_id: str) -> Path:
    """Where the preview of a case goes: ``OUTPUT/preview/<id>.png``."""
    return Path(output_dir) / PREVIEW_DIR / f"{case_id}.png"


def axial_slices(labels: np.ndarray, count: int = 3) -> list[int]:
    """Slice indices along the last axis, evenly inside the foreground's extent.

    Args:
        labels: Label map. Shape: [X, Y, Z].
        count: How many slices (fewer when the extent is thinner).

    Returns:
        Sorted, distinct indices into the last axis.
    """
    present = np.flatnonzero(np.any(labels, axis=tuple(range(labels.ndim - 1))))
    low, high = (present[0], present[-1]) if present.size else (0, labels.shape[-1] - 1)
    # Interior points of the extent: the first and last foreground slices are often slivers.
    positions = np.linspace(low, high, count + 2)[1:-1] if high > low else [low]
    return sorted({int(round(p)) for p in positions})


def render_preview(
    image: np.ndarray,
    labels: np.ndarray,
    geometry: Geometry | None = None,
    *,
    names: Mapping[int, str] | None = None,
    count: int = 3,
) -> np.ndarray:
    """Compose the preview picture: the panels, their titles and edge letters, and the legend.

    Args:
        image: The first input channel on the input grid. Shape: [*S] (2D or 3D).
        labels: The label map on the same grid. Shape: [*S].
        geometry: The input's geometry (3D: to reorient to RAS, keep the aspect ratio and name the edges).
        names: Label value -> class name, for the legend (values without a name show as ``label <value>``).
        count: Axial slices for 3D images.

    Returns:
        RGB picture, uint8. Shape: [H, W, 3].
    """
    font, measure, line_height = font_and_metrics()
    layout = preview_layout(image, labels, geometry, names=names, count=count, measure=measure,
                            line_height=line_height)
    return draw_layout(layout, font)


def preview_layout(
    image: np.ndarray,
    labels: np.ndarray,
    geometry: Geometry | None = None,
    *,
    names: Mapping[int, str] | None = None,
    count: int = 3,
    measure=None,
    line_height: int | None = None,
) -> Layout:
    """Where everything of :func:`render_preview` goes (the font's metrics by default)."""
    if measure is None or line_height is None:
        _, measure, line_height = font_and_metrics()
    return layout_preview(preview_panels(image, labels, geometry, count), legend_entries(labels, names),
                          measure, line_height)


def preview_panels(
    image: np.ndarray, labels: np.ndarray, geometry: Geometry | None = None, count: int = 3
) -> list[Panel]:
    """The coloured slices (3D) or image (2D) with their titles and edge letters."""
    if image.shape != labels.shape:
        raise ValueError(f"preview: image shape {image.shape} differs from labels {labels.shape}")
    if image.ndim == 2:
        return [Panel(_colour(_enlarge([image])[0], _enlarge([labels])[0], *_window([image])))]
    if image.ndim != 3:
        raise ValueError(f"preview: expected a 2D or 3D image, got shape {image.shape}")
    stored_shape = image.shape
    image, labels, spacing, transform = _to_ras(image, labels, geometry)
    picked = axial_slices(labels, count)
    # Radiological display: rows run anterior → posterior, columns patient right → left.
    images = [image[:, :, k].T[::-1, ::-1] for k in picked]
    masks = [labels[:, :, k].T[::-1, ::-1] for k in picked]
    aspect = spacing[1] / spacing[0] if spacing else 1.0
    lo, hi = _window(images)
    edges = display_edges(geometry.affine @ _inverse_transform(transform, stored_shape)) if geometry else {}
    pixels = [_colour(i, m, lo, hi) for i, m in zip(_enlarge(images, aspect), _enlarge(masks, aspect))]
    return [Panel(p, slice_title(k, transform, stored_shape), edges) for p, k in zip(pixels, picked)]


def label_colour(value: int) -> tuple[int, int, int]:
    """The overlay colour of a label value (> 0): the palette, cycled."""
    return tuple(int(c) for c in PALETTE[(int(value) - 1) % len(PALETTE)])  # type: ignore[return-value]


def legend_entries(labels: np.ndarray, names: Mapping[int, str] | None) -> list[tuple[str, tuple[int, int, int]]]:
    """``("<value> <name>", colour)`` for every label value > 0 in the map, in value order."""
    values = [int(v) for v in np.unique(labels) if v > 0]
    return [(f"{v} {(names or {}).get(v, f'label {v}')}", label_colour(v)) for v in values]


def slice_title(index: int, transform: np.ndarray | None, stored_shape: Sequence[int]) -> str:
    """``axial z=37/155``: the shown RAS slice as the voxel index along the stored axis it came from.

    Args:
        index: The slice along the superior axis of the RAS view.
        transform: nibabel orientation transform from the stored axes to RAS (None: shown as stored).
        stored_shape: The image's shape as stored.
    """
    if transform is None:
        return f"z={index}/{stored_shape[2]}"
    axis = int(np.flatnonzero(transform[:, 0] == 2)[0])
    size = int(stored_shape[axis])
    stored = index if transform[axis, 1] > 0 else size - 1 - index
    return f"axial {'xyz'[axis]}={stored}/{size}"


def display_edges(ras_affine: np.ndarray) -> dict[str, str]:
    """The patient direction at each edge of a displayed slice, from the affine of the RAS-ordered view.

    The display runs columns along decreasing voxel x and rows along decreasing voxel y (see
    :func:`preview_panels`); each edge gets the letter of the world direction it faces (world
    coordinates are RAS+: +x towards the patient's right, +y anterior, +z superior).
    """
    columns = -np.asarray(ras_affine, dtype=float)[:3, 0]  # left -> right on screen
    rows = -np.asarray(ras_affine, dtype=float)[:3, 1]  # top -> bottom on screen
    return {"left": _direction(-columns), "right": _direction(columns),
            "top": _direction(-rows), "bottom": _direction(rows)}


def _direction(vector: np.ndarray) -> str:
    """The anatomical letter a world (RAS+) direction points to most: R/L, A/P or S/I."""
    axis = int(np.argmax(np.abs(vector)))
    return ("RL", "AP", "SI")[axis][0 if vector[axis] > 0 else 1]


def _inverse_transform(transform: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The 4x4 matrix from RAS-view voxel indices back to stored voxel indices."""
    from nibabel.orientations import inv_ornt_aff

    return inv_ornt_aff(transform, tuple(shape))


def write_preview(
    path: str | os.PathLike[str],
    image: np.ndarray,
    labels: np.ndarray,
    geometry: Geometry | None = None,
    names: Mapping[int, str] | None = None,
) -> Path:
    """Render (see :func:`render_preview`) and write the PNG atomically; returns its path."""
    from PIL import Image

    picture = render_preview(image, labels, geometry, names=names)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")
    return path


def _to_ras(
    image: np.ndarray, labels: np.ndarray, geometry: Geometry | None
) -> tuple[np.ndarray, np.ndarray, tuple[float, float] | None, np.ndarray | None]:
    """Views of both arrays in RAS axis order, the in-plane (x, y) spacing and the orientation transform."""
    if geometry is None:
        return image, labels, None, None
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    ornt = io_orientation(geometry.affine)
    transform = ornt_transform(ornt, axcodes2ornt(("R", "A", "S")))
    # Flips and transposes only: these are views, nothing is copied.
    spacing = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(transform):
        spacing[int(target)] = float(geometry.spacing[axis])
    ras = apply_orientation(image, transform), apply_orientation(labels, transform)
    return ras[0], ras[1], (spacing[0], spacing[1]), transform


def _window(images: Sequence[np.ndarray]) -> tuple[float, float]:
    """Grey window: the 0.5th to 99.5th percentile of the shown pixels."""
    values = np.concatenate([np.asarray(i, dtype=np.float32).ravel() for i in images])
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    return lo, hi if hi > lo else lo + 1.0


def _enlarge(arrays: Sequence[np.ndarray], aspect: float = 1.0) -> list[np.ndarray]:
    """Nearest-neighbour enlargement of small panels, stretching columns by ``aspect``.

    ``aspect`` is the row spacing over the column spacing (display rows are y, columns x).
    """
    result = []
    for array in arrays:
        rows, cols = array.shape
        factor = max(1, -(-_MIN_SIDE // max(rows, cols)))
        row_scale, col_scale = factor * max(aspect, 1.0), factor * max(1.0 / aspect, 1.0)
        row_index = np.minimum((np.arange(round(rows * row_scale)) / row_scale).astype(int), rows - 1)
        col_index = np.minimum((np.arange(round(cols * col_scale)) / col_scale).astype(int), cols - 1)
        result.append(np.asarray(array)[np.ix_(row_index, col_index)])
    return result


def _colour(image: np.ndarray, labels: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Grey image with each label > 0 blended in its palette colour. Shape: [H, W, 3] uint8."""
    grey = np.clip((np.asarray(image, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    labelled = labels > 0
    if labelled.any():
        colours = PALETTE[(labels[labelled].astype(np.int64) - 1) % len(PALETTE)]
        rgb[labelled] = (1.0 - _ALPHA) * rgb[labelled] + _ALPHA * colours
    return np.rint(rgb).astype(np.uint8)
