"""nnU-Net's preparation of a case and its way back, as numpy/scipy code of our own.

Order (nnU-Net v2's documented preprocessing; it never reorients):

1. nnU-Net's axis order: the reverse of the stored index order (what SimpleITK's arrays give),
   a 2D image getting a leading axis of one slice; then ``transpose_forward`` (the plans put the
   low-resolution axis first).
2. Crop to the non-zero region: the bounding box of the voxels that are non-zero in any channel,
   after filling holes in that mask.
3. Normalise each channel (before resampling, so the mask still fits the image).
4. Resample to the configuration's spacing (images: cubic splines; see :mod:`.resample`). A 2d
   configuration keeps the spacing of the first axis (its slices).

Back: the logits are resampled to the cropped shape (linear), put back into the uncropped grid
(outside the crop every voxel is background: ``crop_fill``), transposed back and returned in the
stored index order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import Geometry
from .resample import new_shape, resample
from .spec import NnunetSpec

__all__ = ["NnunetState", "grid_shape", "nonzero_bbox", "normalize_channel", "prepare", "restore"]

_EPS = 1e-8
_FLAT_SPACING = 999.0  # the slice spacing nnU-Net gives a 2D image (times its largest spacing)


@dataclass
class NnunetState:
    """What :func:`restore` needs: the stored rank, the uncropped shape, the crop and the spacings."""

    input_ndim: int
    uncropped_shape: tuple[int, ...]
    bbox: tuple[tuple[int, int], ...]
    cropped_shape: tuple[int, ...]
    spacing: tuple[float, ...]          # of the cropped image (nnU-Net's transposed axes)
    target_spacing: tuple[float, ...]   # of the network grid


def _arranged(shape: tuple[int, ...], spacing: tuple[float, ...], spec: NnunetSpec
              ) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Spatial shape and spacing in nnU-Net's axes: reversed (2D: a slice axis first), then transposed."""
    if len(shape) == 2:
        shape, spacing = (1, shape[1], shape[0]), (_FLAT_SPACING * max(spacing), spacing[1], spacing[0])
    else:
        shape, spacing = tuple(shape[::-1]), tuple(spacing[::-1])
    order = spec.transpose_forward
    return tuple(int(shape[a]) for a in order), tuple(float(spacing[a]) for a in order)


def _to_nnunet_axes(image: np.ndarray, spec: NnunetSpec) -> np.ndarray:
    """Stored index order -> nnU-Net's axes (a view). Shape: [C, *S] -> [C, *S3]"""
    image = np.swapaxes(image, 1, 2)[:, None] if image.ndim == 3 else np.transpose(image, (0, 3, 2, 1))
    return image.transpose(0, *[a + 1 for a in spec.transpose_forward])


def _from_nnunet_axes(array: np.ndarray, input_ndim: int, spec: NnunetSpec) -> np.ndarray:
    """The inverse of :func:`_to_nnunet_axes` for channel-first arrays. Shape: [K, *S3] -> [K, *S_in]"""
    array = array.transpose(0, *[a + 1 for a in spec.inverse_transpose])
    if input_ndim == 2:
        return np.swapaxes(array[:, 0], 1, 2)
    return np.transpose(array, (0, 3, 2, 1))


def _target(spacing: tuple[float, ...], spec: NnunetSpec) -> tuple[float, ...]:
    """The network grid's spacing: a 2d configuration keeps the first axis' spacing."""
    target = tuple(spec.target_spacing)
    return (spacing[0], *target) if len(target) < 3 else target


def grid_shape(shape: tuple[int, ...], geometry: Geometry, spec: NnunetSpec) -> tuple[int, ...]:
    """The network grid's shape before cropping (an upper bound), from shapes alone."""
    shape, spacing = _arranged(shape, tuple(float(s) for s in geometry.spacing[: len(shape)]), spec)
    return new_shape(shape, spacing, _target(spacing, spec))


def nonzero_bbox(image: np.ndarray) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    """The non-zero mask (any channel, holes filled) and its bounding box, half-open per axis.

    An image without any non-zero voxel keeps its full extent.

    Shape: image [C, *S] -> mask [*S]
    """
    from scipy.ndimage import binary_fill_holes

    mask = np.any(image != 0, axis=0)
    mask = binary_fill_holes(mask)
    bbox = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))
        bbox.append((int(hits[0]), int(hits[-1]) + 1) if hits.size else (0, mask.shape[axis]))
    return mask, tuple(bbox)


def normalize_channel(x: np.ndarray, entry: dict, mask: np.ndarray | None) -> None:
    """Normalise one float32 channel in place (see :mod:`.spec` for the schemes).

    ``mask`` is the (cropped) non-zero mask, used by ``zscore`` with ``use_mask``: statistics
    from, and changes to, the voxels inside it only.
    """
    scheme = entry["scheme"]
    if scheme == "zscore":
        if entry.get("use_mask", False) and mask is not None:
            values = x[mask]
            x[mask] = (values - values.mean()) / max(float(values.std()), _EPS)
        else:
            mean, std = x.mean(), max(float(x.std()), _EPS)
            x -= mean
            x /= np.float32(std)
    elif scheme == "ct":
        np.clip(x, entry["lower"], entry["upper"], out=x)
        x -= np.float32(entry["mean"])
        x /= np.float32(max(float(entry["std"]), _EPS))
    elif scheme == "rescale_to_0_1":
        x -= x.min()
        x /= np.float32(max(float(x.max()), _EPS))
    elif scheme == "rgb_to_0_1":
        x /= np.float32(255.0)


def prepare(image: np.ndarray, geometry: Geometry, spec: NnunetSpec) -> tuple[np.ndarray, NnunetState]:
    """The network-grid image of a case and the state to map outputs back.

    Args:
        image: Channel-first image in stored index order. Shape: [C, *S] (2 or 3 spatial axes).
        geometry: Its geometry (the spacing is used; nothing is reoriented).
        spec: The model's settings.

    Returns:
        The image (Shape: [C, *S'], float32, nnU-Net's axes) and a :class:`NnunetState`.
    """
    _, spacing = _arranged(image.shape[1:], tuple(float(s) for s in geometry.spacing[: image.ndim - 1]), spec)
    arranged = _to_nnunet_axes(image, spec)
    mask, bbox = nonzero_bbox(arranged)
    box = tuple(slice(lo, hi) for lo, hi in bbox)
    cropped = np.array(arranged[(slice(None), *box)], dtype=np.float32)  # one C-ordered copy
    mask = mask[box]
    for index, entry in enumerate(spec.normalization):
        normalize_channel(cropped[index], entry, mask)
    del mask
    target = _target(spacing, spec)
    shape = new_shape(cropped.shape[1:], spacing, target)
    state = NnunetState(image.ndim - 1, tuple(arranged.shape[1:]), bbox, tuple(cropped.shape[1:]), spacing, target)
    return resample(cropped, shape, spacing, target, spec.resample_data), state


def restore(array: np.ndarray, state: NnunetState, spec: NnunetSpec, *, labels: bool = False,
            first_channel: int = 0) -> np.ndarray:
    """Network-grid outputs back on the stored grid.

    Args:
        array: Logits (or a label map with ``labels``) on the network grid. Shape: [K, *S'].
        state: From :func:`prepare`.
        spec: The model's settings.
        labels: Nearest-neighbour resampling and 0 outside the crop (label maps).
        first_channel: Which output channel ``array[0]`` is (picks its ``crop_fill``).

    Returns:
        The same channels on the stored grid, in the dtype of ``array``. Shape: [K, *S_in].
    """
    settings = spec.resample_logits
    if labels:
        from dataclasses import replace

        settings = replace(settings, order=0, order_z=0)
    back = resample(array, state.cropped_shape, state.target_spacing, state.spacing, settings)
    out = np.empty((array.shape[0], *state.uncropped_shape), dtype=array.dtype)
    for index in range(array.shape[0]):
        out[index] = 0 if labels else spec.crop_fill[first_channel + index]
    out[(slice(None), *(slice(lo, hi) for lo, hi in state.bbox))] = back
    return np.ascontiguousarray(_from_nnunet_axes(out, state.input_ndim, spec))
