"""nnU-Net's resampling, in numpy/scipy: images before the network, logits back after it.

What nnU-Net v2 does (its documentation and observed behaviour; ``resample_data_or_seg_to_shape``):

- Spline interpolation of each channel in float64 (``order`` 3 for images, 1 for logits), the
  voxel *extents* aligned (grid mode, edge values repeated past the border), the result clipped
  to the channel's input range (splines overshoot; linear interpolation never does).
- Anisotropic data (largest spacing more than ``anisotropy_threshold`` times the smallest, in
  the current spacing or else in the new one): the axis with the largest spacing is resampled
  apart. Each slice across it is interpolated in 2D with ``order``, then that axis alone with
  ``order_z`` (0: nearest neighbour). When two or three axes share the largest spacing there is
  no single low-resolution axis and everything is interpolated together.
- New shapes are ``round(old_spacing / new_spacing * old_shape)`` per axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Resampling", "new_shape", "resample", "separate_axis"]


@dataclass(frozen=True)
class Resampling:
    """One of nnU-Net's resampling settings (``resampling_fn_*_kwargs`` in ``plans.json``).

    Attributes:
        order: Spline order within slices (or of the whole volume).
        order_z: Spline order along a separately resampled low-resolution axis.
        force_separate_z: True/False forces the separate axis on/off; None decides from spacing.
        anisotropy_threshold: Spacing ratio above which an axis counts as low resolution.
    """

    order: int = 3
    order_z: int = 0
    force_separate_z: bool | None = None
    anisotropy_threshold: float = 3.0

    def __post_init__(self) -> None:
        for key in ("order", "order_z"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 5:
                raise ValueError(f"{key}: expected a spline order 0..5, got {value!r}")
        if self.force_separate_z not in (None, True, False):
            raise ValueError(f"force_separate_z: expected true, false or null, got {self.force_separate_z!r}")
        if not float(self.anisotropy_threshold) > 0:
            raise ValueError(f"anisotropy_threshold: must be > 0, got {self.anisotropy_threshold!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Resampling:
        """Build from a dict (ValueError naming the key on unknown or bad values)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"expected an object, got {type(data).__name__}")
        unknown = sorted(set(data) - {"order", "order_z", "force_separate_z", "anisotropy_threshold"})
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}")
        return cls(**dict(data))


def new_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """``round(spacing / target * shape)`` per axis (nnU-Net's rule; Python rounding)."""
    return tuple(int(round(s / t * n)) for n, s, t in zip(shape, spacing, target, strict=True))


def _low_resolution_axis(spacing: Sequence[float]) -> int | None:
    """The one axis with the largest spacing, or None when two or more share it."""
    spacing = np.asarray(spacing, dtype=np.float64)
    axes = np.flatnonzero(spacing.max() / spacing == 1)
    return int(axes[0]) if len(axes) == 1 else None


def separate_axis(current: Sequence[float], new: Sequence[float], settings: Resampling) -> int | None:
    """The axis resampled apart (see the module docstring), or None for joint interpolation."""
    def anisotropic(spacing: Sequence[float]) -> bool:
        return float(np.max(spacing) / np.min(spacing)) > settings.anisotropy_threshold

    if settings.force_separate_z is not None:
        return _low_resolution_axis(current) if settings.force_separate_z else None
    if anisotropic(current):
        return _low_resolution_axis(current)
    if anisotropic(new):
        return _low_resolution_axis(new)
    return None


def resample(
    data: np.ndarray,
    shape: Sequence[int],
    current_spacing: Sequence[float],
    new_spacing: Sequence[float],
    settings: Resampling,
) -> np.ndarray:
    """Resample every channel to ``shape`` the way nnU-Net does (float64 inside).

    Args:
        data: Channel-first array. Shape: [C, *S] (3 spatial axes).
        shape: The new spatial shape. Shape: [*S'].
        current_spacing: The spacing of ``data`` (decides the low-resolution axis).
        new_spacing: The spacing of the result.
        settings: Orders and the separate-axis rule.

    Returns:
        The resampled channels in the dtype of ``data`` (``data`` itself when nothing changes).
        Shape: [C, *S'].
    """
    shape = tuple(int(s) for s in shape)
    if tuple(data.shape[1:]) == shape:
        return data
    axis = separate_axis(current_spacing, new_spacing, settings)
    out = np.empty((data.shape[0], *shape), dtype=data.dtype)
    for index, channel in enumerate(data):
        channel = channel.astype(np.float64)
        if axis is None:
            out[index] = _resize(channel, shape, settings.order)
        else:
            out[index] = _resize_separately(channel, shape, axis, settings.order, settings.order_z)
    return out


def _resize(x: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """Spline resampling with aligned voxel extents, edges repeated, clipped to the input range."""
    from scipy import ndimage

    if tuple(x.shape) == tuple(shape):
        return x
    factors = [t / s for t, s in zip(shape, x.shape, strict=True)]
    out = ndimage.zoom(x, factors, order=order, mode="nearest", grid_mode=True)
    if order > 0:  # splines overshoot; the result stays within the input's range
        np.clip(out, x.min(), x.max(), out=out)
    return out


def _resize_separately(x: np.ndarray, shape: Sequence[int], axis: int, order: int, order_z: int) -> np.ndarray:
    """Slices across ``axis`` in 2D with ``order``, then ``axis`` alone with ``order_z``."""
    planar = [s for a, s in enumerate(shape) if a != axis]
    moved = np.moveaxis(x, axis, 0)
    slices = np.stack([_resize(plane, planar, order) for plane in moved])
    slices = np.moveaxis(slices, 0, axis)
    if slices.shape[axis] == shape[axis]:
        return slices
    return _resize_axis(slices, shape[axis], axis, order_z)


def _resize_axis(x: np.ndarray, size: int, axis: int, order: int) -> np.ndarray:
    """Interpolate along one axis only (voxel extents aligned, edges repeated).

    Source coordinate of output index ``i``: ``(i + 0.5) * n / size - 0.5``.
    """
    from scipy import ndimage

    length = x.shape[axis]
    coords = (np.arange(size, dtype=np.float64) + 0.5) * (float(length) / size) - 0.5
    if order == 0:  # the same rounding as scipy's order-0 interpolation, along this axis only
        index = ndimage.map_coordinates(np.arange(length, dtype=np.float64), coords[None], order=0, mode="nearest")
        return np.take(x, index.astype(np.intp), axis=axis)
    if order == 1:
        low = np.floor(coords)
        weight = (coords - low).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
        first = np.clip(low, 0, length - 1).astype(np.intp)
        second = np.clip(low + 1, 0, length - 1).astype(np.intp)
        return np.take(x, first, axis=axis) * (1 - weight) + np.take(x, second, axis=axis) * weight
    grid = list(np.meshgrid(*[np.arange(n, dtype=np.float64) if a != axis else coords
                              for a, n in enumerate(x.shape)], indexing="ij"))
    return ndimage.map_coordinates(x, np.stack(grid), order=order, mode="nearest")
