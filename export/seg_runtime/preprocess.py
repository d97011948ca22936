"""Deterministic preprocessing shared by training and inference, and its exact inverse.

Order: reorient to the target axis codes (3D only; flips/transposes, exactly invertible),
normalise intensities, resample to the target spacing. Normalising before resampling keeps
the "nonzero" mask of z-scoring on the original voxels (interpolation would smear it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .geometry import Geometry

_SCHEMES = {"zscore": (), "fixed": ("mean", "std"), "minmax": ("lo", "hi"), "none": ()}
_EPS = 1e-8
# Plausible voxel sizes (mm): 0.1 um (microscopy) to 10 m. Outside, a spacing is a unit slip or
# a typo, and resampling a scan to it would ask for an absurd grid.
MIN_TARGET_SPACING = 1e-4
MAX_TARGET_SPACING = 1e4


@dataclass
class PreprocessSpec:
    """How a model expects its input to be prepared (stored in ``model.json``).

    Attributes:
        orientation: Target axis codes for 3D images (e.g. ``"RAS"``); None keeps the stored
            orientation. Ignored for 2D images.
        target_spacing: Voxel size to resample to, one value per spatial axis; None keeps it.
        normalization: One entry per channel, or a single entry for all channels:
            ``{"scheme": "zscore", "nonzero": bool}``,
            ``{"scheme": "fixed", "clip": [lo, hi] | None, "mean": m, "std": s}``,
            ``{"scheme": "minmax", "lo": lo, "hi": hi}`` or ``{"scheme": "none"}``.
    """

    orientation: str | None = "RAS"
    target_spacing: list[float] | None = None
    normalization: list[dict[str, Any]] = field(
        default_factory=lambda: [{"scheme": "zscore", "nonzero": False}]
    )

    def __post_init__(self) -> None:
        if self.orientation is not None and (
            len(self.orientation) != 3 or set(self.orientation.upper()) - set("LRAPSI")
        ):
            raise ValueError(
                f"preprocess.orientation: expected 3 axis codes like 'RAS', got {self.orientation!r}"
            )
        if self.target_spacing is not None:
            if not all(MIN_TARGET_SPACING <= float(s) <= MAX_TARGET_SPACING for s in self.target_spacing):
                raise ValueError(
                    f"preprocess.target_spacing: values must be in [{MIN_TARGET_SPACING:g}, "
                    f"{MAX_TARGET_SPACING:g}] mm, got {self.target_spacing}"
                )
            self.target_spacing = [float(s) for s in self.target_spacing]
        if not self.normalization:
            raise ValueError("preprocess.normalization: needs at least one entry")
        for index, entry in enumerate(self.normalization):
            _check_entry(index, entry)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "orientation": self.orientation,
            "target_spacing": None if self.target_spacing is None else list(self.target_spacing),
            "normalization": [dict(entry) for entry in self.normalization],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        """Build from a dict (validated; errors name the key)."""
        if not isinstance(data, dict):
            raise ValueError(f"preprocess: expected an object, got {type(data).__name__}")
        unknown = set(data) - {"orientation", "target_spacing", "normalization"}
        if unknown:
            raise ValueError(f"preprocess: unknown key(s) {sorted(unknown)}")
        normalization = data.get("normalization", [{"scheme": "zscore", "nonzero": False}])
        if not isinstance(normalization, list):
            raise ValueError("preprocess.normalization: expected a list of objects")
        return cls(
            orientation=data.get("orientation", "RAS"),
            target_spacing=data.get("target_spacing"),
            normalization=normalization,
        )


def _check_entry(index: int, entry: Any) -> None:
    """Validate one normalisation entry."""
    where = f"preprocess.normalization[{index}]"
    if not isinstance(entry, dict) or entry.get("scheme") not in _SCHEMES:
        raise ValueError(f"{where}: expected {{'scheme': one of {sorted(_SCHEMES)}, ...}}, got {entry!r}")
    for key in _SCHEMES[entry["scheme"]]:
        if not isinstance(entry.get(key), (int, float)):
            raise ValueError(f"{where}.{key}: required number for scheme '{entry['scheme']}'")
    if entry["scheme"] == "fixed" and float(entry["std"]) == 0:
        raise ValueError(f"{where}.std: must be non-zero")
    if entry["scheme"] == "minmax" and float(entry["hi"]) <= float(entry["lo"]):
        raise ValueError(f"{where}: 'hi' must be greater than 'lo'")
    clip = entry.get("clip")
    if entry["scheme"] == "fixed" and clip is not None and (not isinstance(clip, list) or len(clip) != 2):
        raise ValueError(f"{where}.clip: expected [lo, hi] or null")


@dataclass
class PreprocessState:
    """What :func:`restore_to_input` needs to map model-grid arrays back to the input grid.

    Attributes:
        input_shape: Spatial shape of the image given to :func:`preprocess_image`.
        oriented_shape: Spatial shape after reorientation.
        output_shape: Spatial shape after resampling (the model grid).
        ornt_in: nibabel orientation of the input axes, or None when not reoriented.
        ornt_target: nibabel orientation of the target axis codes, or None.
    """

    input_shape: tuple[int, ...]
    oriented_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    ornt_in: np.ndarray | None = None
    ornt_target: np.ndarray | None = None


def preprocess_image(
    image: np.ndarray, geometry: Geometry, spec: PreprocessSpec, *, inplace: bool = False
) -> tuple[np.ndarray, PreprocessState]:
    """Reorient, normalise and resample an image for the model.

    Normalisation is per channel and does not depend on the axis order, so it runs first, on the
    input grid; the reorientation is a view, and the resampling writes each channel into one
    preallocated model-grid array. Memory beyond ``image``: the model grid and one channel, or, when
    nothing is resampled, at most one reoriented copy.

    Args:
        image: Channel-first image. Shape: [C, *S].
        geometry: The image's geometry (affine for orientation, spacing for resampling).
        spec: The model's preprocessing.
        inplace: Normalise ``image`` itself (a float32 array the caller owns and no longer needs).

    Returns:
        The model-ready image (Shape: [C, *S'], float32) and the state to undo the spatial steps.
    """
    ndim = image.ndim - 1
    if inplace and image.dtype == np.float32:
        normalised = image
        for index, channel in enumerate(image):
            _normalize_channel(channel, _entry(spec.normalization, index, image.shape[0]))
    else:
        normalised = normalize(image, spec.normalization)
    oriented, ornt_in, ornt_target, spacing = _orient(normalised, geometry, spec, ndim, channel_axis=True)
    output_shape = _target_shape(oriented.shape[1:], spacing, spec)
    if tuple(output_shape) == tuple(oriented.shape[1:]):
        resampled = np.ascontiguousarray(oriented)  # no resampling: no copy unless reoriented
    else:
        resampled = np.empty((oriented.shape[0], *output_shape), np.float32)
        for index, channel in enumerate(oriented):
            resize(channel, output_shape, order=1, out=resampled[index])
    state = PreprocessState(
        tuple(image.shape[1:]), tuple(oriented.shape[1:]), output_shape, ornt_in, ornt_target
    )
    return resampled, state


def model_grid_shape(shape: tuple[int, ...], geometry: Geometry, spec: PreprocessSpec) -> tuple[int, ...]:
    """The model-grid shape :func:`preprocess_image` would resample to, from shapes alone.

    Lets callers check the memory a case needs before anything is allocated.

    Args:
        shape: The image's spatial shape. Shape: [*S].
        geometry: The image's geometry.
        spec: The model's preprocessing.

    Returns:
        The spatial shape after reorientation and resampling. Shape: [*S'].
    """
    ndim = len(shape)
    spacing = tuple(float(s) for s in geometry.spacing[:ndim])
    if ndim == 3 and spec.orientation is not None:
        from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

        target = axcodes2ornt(tuple(spec.orientation.upper()))
        transform = ornt_transform(io_orientation(geometry.affine), target)
        oriented, moved = [0] * 3, [0.0] * 3
        for axis, (target_axis, _) in enumerate(transform):
            oriented[int(target_axis)], moved[int(target_axis)] = int(shape[axis]), spacing[axis]
        shape, spacing = tuple(oriented), tuple(moved)
    return _target_shape(tuple(int(s) for s in shape), spacing, spec)


def preprocess_label(label: np.ndarray, geometry: Geometry, spec: PreprocessSpec) -> np.ndarray:
    """Apply the image's spatial steps to a label map (nearest-neighbour resampling).

    Args:
        label: Integer label map on the image grid. Shape: [*S].
        geometry: The image's geometry.
        spec: The model's preprocessing.

    Returns:
        The label map on the model grid. Shape: [*S'] (integer dtype).
    """
    label = np.asarray(label)
    if label.dtype.kind not in "iub":
        label = np.rint(label).astype(np.int32)
    oriented, _, _, spacing = _orient(label, geometry, spec, label.ndim, channel_axis=False)
    return resize(np.ascontiguousarray(oriented), _target_shape(oriented.shape, spacing, spec), order=0)


def restore_to_input(array: np.ndarray, state: PreprocessState, *, labels: bool = False) -> np.ndarray:
    """Map model-grid arrays back to the input grid: the inverse of the spatial steps.

    Resamples back to exactly the oriented input shape, then undoes the reorientation, one
    channel at a time so that only one float32 channel is ever materialised extra.

    Args:
        array: Per-channel arrays on the model grid (probabilities or a label map). Shape: [K, *S'].
        state: From :func:`preprocess_image`.
        labels: True for label maps (nearest neighbour), False for probabilities (linear).

    Returns:
        The arrays on the input grid, same dtype as ``array``. Shape: [K, *S_in].
    """
    if tuple(array.shape[1:]) != tuple(state.output_shape):
        raise ValueError(
            f"restore_to_input: spatial shape {array.shape[1:]} != model grid {state.output_shape}"
        )
    out = np.empty((array.shape[0], *state.input_shape), dtype=array.dtype)
    for index, channel in enumerate(array):
        resized = resize(channel, state.oriented_shape, order=0 if labels else 1)
        if state.ornt_in is not None:
            from nibabel.orientations import apply_orientation, ornt_transform

            resized = apply_orientation(resized, ornt_transform(state.ornt_target, state.ornt_in))
        out[index] = resized
    return out


def normalize(image: np.ndarray, entries: list[dict[str, Any]]) -> np.ndarray:
    """Normalise each channel with its entry (or the single entry for all channels).

    Works in place on a float32 output one channel at a time: a full-size float64 temporary
    per channel would triple the peak memory on large volumes.

    Args:
        image: Channel-first image. Shape: [C, *S].
        entries: Normalisation entries (see :class:`PreprocessSpec`).

    Returns:
        The normalised image, float32. Shape: [C, *S].
    """
    if len(entries) not in (1, image.shape[0]):
        raise ValueError(f"normalization has {len(entries)} entries for {image.shape[0]} channels")
    out = np.empty(image.shape, dtype=np.float32)
    for index, channel in enumerate(image):
        out[index] = channel
        _normalize_channel(out[index], _entry(entries, index, image.shape[0]))
    return out


def _entry(entries: list[dict[str, Any]], index: int, channels: int) -> dict[str, Any]:
    """The normalisation entry of channel ``index`` (one entry serves every channel)."""
    if len(entries) not in (1, channels):
        raise ValueError(f"normalization has {len(entries)} entries for {channels} channels")
    return entries[index if len(entries) > 1 else 0]


def _normalize_channel(x: np.ndarray, entry: dict[str, Any]) -> None:
    """Normalise one float32 channel in place."""
    scheme = entry["scheme"]
    if scheme == "zscore":
        if not entry.get("nonzero", False):
            mean, std = _mean_std(x)
            _affine(x, mean, 1.0 / max(std, _EPS))
            return
        mask = x != 0
        if mask.any():
            values = x[mask]
            mean, std = _mean_std(values)
            _affine(values, mean, 1.0 / max(std, _EPS))
            x[mask] = values
        return
    if scheme == "fixed":
        if entry.get("clip") is not None:
            np.clip(x, float(entry["clip"][0]), float(entry["clip"][1]), out=x)
        _affine(x, float(entry["mean"]), 1.0 / float(entry["std"]))
    elif scheme == "minmax":
        lo, hi = float(entry["lo"]), float(entry["hi"])
        np.clip(x, lo, hi, out=x)
        _affine(x, lo, 1.0 / (hi - lo))


def _affine(x: np.ndarray, shift: float, scale: float) -> None:
    """``x = (x - shift) * scale`` in place, in float32."""
    x -= np.float32(shift)
    x *= np.float32(scale)


_CHUNK = 1 << 22


def _mean_std(x: np.ndarray) -> tuple[float, float]:
    """Mean and (population) standard deviation in float64, in chunks of 4M values.

    ``np.std`` would materialise ``x - mean`` as a full float64 array.
    """
    flat = x.reshape(-1)
    if flat.size == 0:
        return 0.0, 0.0
    mean = float(flat.mean(dtype=np.float64))
    squares = 0.0
    for start in range(0, flat.size, _CHUNK):
        deviation = flat[start : start + _CHUNK].astype(np.float64) - mean
        squares += float(np.dot(deviation, deviation))
    return mean, math.sqrt(squares / flat.size)


def _orient(
    array: np.ndarray, geometry: Geometry, spec: PreprocessSpec, ndim: int, *, channel_axis: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, tuple[float, ...]]:
    """Reorient a 3D array to ``spec.orientation`` (a view: flips and transposes); returns it, the
    ornts and the new spacing."""
    spacing = tuple(float(s) for s in geometry.spacing[:ndim])
    if ndim != 3 or spec.orientation is None:
        return array, None, None, spacing
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    ornt_in = io_orientation(geometry.affine)
    ornt_target = axcodes2ornt(tuple(spec.orientation.upper()))
    transform = ornt_transform(ornt_in, ornt_target)
    moved = np.moveaxis(array, 0, -1) if channel_axis else array
    oriented = apply_orientation(moved, transform)
    oriented = np.moveaxis(oriented, -1, 0) if channel_axis else oriented
    new_spacing = [0.0] * 3
    for axis, (target_axis, _) in enumerate(transform):
        new_spacing[int(target_axis)] = spacing[axis]
    return oriented, ornt_in, ornt_target, tuple(new_spacing)


def _target_shape(
    shape: tuple[int, ...], spacing: tuple[float, ...], spec: PreprocessSpec
) -> tuple[int, ...]:
    """round(shape * spacing / target) per axis (at least 1); the shape itself without a target."""
    if spec.target_spacing is None:
        return tuple(int(s) for s in shape)
    if len(spec.target_spacing) != len(shape):
        raise ValueError(f"target_spacing {spec.target_spacing} does not match a {len(shape)}D image")
    return tuple(
        max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, spec.target_spacing, strict=True)
    )


def resize(array: np.ndarray, shape: tuple[int, ...], *, order: int, out: np.ndarray | None = None) -> np.ndarray:
    """Resample a spatial array to exactly ``shape`` (voxel extents aligned, not centres).

    Args:
        array: Shape: [*S] (any strides: a reoriented view is read as it is).
        shape: Target spatial shape.
        order: Spline order: 0 nearest (labels, keeps dtype), 1 linear (float32).
        out: A float32 array of ``shape`` to write into (float32 input only), instead of a new one.

    Returns:
        Shape: ``shape``.
    """
    if tuple(array.shape) == tuple(shape):
        if out is not None:
            out[...] = array
            return out
        return array
    from scipy import ndimage

    factors = [t / s for t, s in zip(shape, array.shape, strict=True)]
    # ndimage has no float16/bool kernels, and interpolating integers would truncate.
    unsupported = array.dtype in (np.float16, np.bool_) or (order > 0 and array.dtype.kind != "f")
    source = array.astype(np.float32) if unsupported else array
    if out is None or out.dtype != source.dtype:
        out = np.empty(tuple(shape), dtype=source.dtype)
    # grid_mode maps voxel edges onto voxel edges, so the physical extent is preserved.
    ndimage.zoom(source, factors, output=out, order=order, mode="nearest", grid_mode=True)
    return (
        out if out.dtype == array.dtype or order > 0 and array.dtype.kind != "f" else out.astype(array.dtype)
    )
