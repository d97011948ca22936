"""Gaussian-weighted sliding-window inference over any ``predict_batch`` callable (numpy).

The torch path reuses the importance map and patch grid; the ONNX path uses all of it.

Memory: blending is streamed along the first spatial axis. Patches come in grid order (first
axis outermost), so once the next patch starts at row ``r`` every row before ``r`` is final:
it is normalised and stored in the output (float16 if asked), and only a float32 slab one
patch deep is ever accumulated. The Gaussian and the patch grid are both separable, so the
blending weights are an outer product of per-axis sums and never need a full-size array.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

PredictBatch = Callable[[np.ndarray], np.ndarray]


class NonFiniteOutput(ValueError):
    """The network returned NaN or Inf logits: the case fails instead of becoming a label map."""

# Per-axis floor of the Gaussian profile: keeps the product over three axes a normal float32
# (>= 1e-36) so no voxel gets zero weight, even for tiny sigma scales.
_PROFILE_FLOOR = 1e-12


IMPORTANCE = ("seg", "nnunet")


def _gaussian_profiles(patch_size: Sequence[int], sigma_scale: float, kind: str = "seg") -> list[np.ndarray]:
    """Per-axis Gaussian profiles (float64, peak 1, floored) whose outer product is the map.

    ``seg`` centres each profile on the patch (``(size - 1) / 2``); ``nnunet`` on voxel ``size // 2``
    (half a voxel off-centre for even sizes), as nnU-Net's predictor weights its patches.
    """
    if kind not in IMPORTANCE:
        raise ValueError(f"importance must be one of {', '.join(IMPORTANCE)}, got {kind!r}")
    profiles = []
    for size in patch_size:
        centre = (size - 1) / 2.0 if kind == "seg" else float(size // 2)
        sigma = max(size * sigma_scale, 1e-6)
        profile = np.exp(-0.5 * ((np.arange(size) - centre) / sigma) ** 2)
        profiles.append(np.maximum(profile / profile.max(), _PROFILE_FLOOR))
    return profiles


def _outer(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """Outer product of 1D arrays (a 0-d one for no vectors)."""
    result = np.ones((), dtype=np.float64)
    for vector in vectors:
        result = np.multiply.outer(result, vector)
    return result


def gaussian_importance_map(patch_size: Sequence[int], sigma_scale: float = 0.125, kind: str = "seg") -> np.ndarray:
    """Separable Gaussian centred on the patch, peak 1, no zeros.

    Patch borders get low weight because a network's edge predictions lack context.

    Args:
        patch_size: Spatial patch size.
        sigma_scale: Sigma as a fraction of the patch size per axis.
        kind: ``seg`` (centred on the patch) or ``nnunet`` (centred on voxel ``size // 2``).

    Returns:
        The weights, float32, max 1 and strictly positive. Shape: ``patch_size``.
    """
    return _outer(_gaussian_profiles(patch_size, sigma_scale, kind)).astype(np.float32)


def _starts(size: int, patch: int, overlap: float) -> list[int]:
    """Evenly spaced patch starts along one axis: first at 0, last flush with the end."""
    if size < patch:
        raise ValueError(f"image size {size} is smaller than the patch size {patch} (pad first)")
    if size == patch:
        return [0]
    target_step = max(patch * (1.0 - overlap), 1.0)
    count = math.ceil((size - patch) / target_step) + 1
    return sorted({int(round(v)) for v in np.linspace(0, size - patch, count)})


def patch_grid(
    image_shape: Sequence[int], patch_size: Sequence[int], overlap: float
) -> list[tuple[slice, ...]]:
    """Patch windows covering every voxel, flush with both borders of every axis.

    Windows come in C order of their starts (first axis outermost); the streamed blending
    of :func:`sliding_window_inference` relies on that.

    Args:
        image_shape: Spatial image shape (each >= the patch size).
        patch_size: Spatial patch size.
        overlap: Fraction of a patch shared with its neighbour, in [0, 1); the step is at most
            ``patch * (1 - overlap)``.

    Returns:
        Spatial slice tuples, one per patch.
    """
    if len(image_shape) != len(patch_size):
        raise ValueError(
            f"image shape {tuple(image_shape)} and patch size {tuple(patch_size)} differ in rank"
        )
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    per_axis = [
        [slice(start, start + patch) for start in _starts(size, patch, overlap)]
        for size, patch in zip(image_shape, patch_size, strict=True)
    ]
    return list(itertools.product(*per_axis))


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax in float32 (a new array; ``logits`` is left alone)."""
    logits = logits.astype(np.float32, copy=False)
    shifted = logits - logits.max(axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function in float32 (a new array), for region outputs."""
    from scipy.special import expit

    return expit(logits.astype(np.float32, copy=False))


def identity(logits: np.ndarray) -> np.ndarray:
    """Logits as float32 (a new array when they were not float32): blending in logit space."""
    return np.array(logits, dtype=np.float32, copy=True)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"softmax": softmax, "sigmoid": sigmoid,
                                                              "none": identity}


def _mirror_subsets(mirror_axes: Sequence[int] | None, ndim: int) -> list[tuple[int, ...]]:
    """All subsets of the mirror axes (empty subset first), as batch-array axes."""
    axes = tuple(mirror_axes or ())
    if any(not 0 <= a < ndim for a in axes):
        raise ValueError(f"mirror_axes {axes} must be spatial axes in 0..{ndim - 1}")
    return [
        tuple(a + 2 for a in subset)
        for r in range(len(axes) + 1)
        for subset in itertools.combinations(axes, r)
    ]


def _predict_probabilities(
    batch: np.ndarray,
    predict_batch: PredictBatch,
    num_classes: int,
    flips: list[tuple[int, ...]],
    activation: Callable[[np.ndarray], np.ndarray] = softmax,
) -> np.ndarray:
    """Probabilities of the model, averaged over the mirrored copies of the batch. Shape: [B, K, *P]."""
    total: np.ndarray | None = None
    for flip in flips:
        inputs = np.ascontiguousarray(np.flip(batch, flip)) if flip else batch
        logits = np.asarray(predict_batch(inputs))
        expected = (batch.shape[0], num_classes, *batch.shape[2:])
        if logits.shape != expected:
            raise ValueError(f"predict_batch returned shape {logits.shape}, expected {expected}")
        if not np.isfinite(logits).all():
            raise NonFiniteOutput(f"the network's output holds NaN or Inf ({int((~np.isfinite(logits)).sum())} "
                                  "values in one batch of patches): no label map is written from it")
        probs = activation(logits)
        probs = np.flip(probs, flip) if flip else probs
        if total is None:
            total = probs  # the unflipped pass comes first: a fresh array, safe to add into
        else:
            total += probs
    if len(flips) > 1:
        total /= len(flips)
    return total


class _StreamedBlend:
    """Gaussian blending into a slab one patch deep along axis 0, flushed into ``out``.

    Args:
        out: Destination for the normalised probabilities. Shape: [K, *S].
        patch_size: Spatial patch size P.
        overlap: Patch overlap (to rebuild the per-axis starts for the weight sums).
        sigma_scale, importance: See :func:`gaussian_importance_map`.
    """

    def __init__(
        self, out: np.ndarray, patch_size: Sequence[int], overlap: float, sigma_scale: float = 0.125,
        importance: str = "seg",
    ) -> None:
        """Precompute the importance map and the per-axis weight sums; zero the slab."""
        spatial = out.shape[1:]
        self.out = out
        self.depth = int(patch_size[0])
        profiles = _gaussian_profiles(patch_size, sigma_scale, importance)
        self.importance = _outer(profiles).astype(np.float32)
        sums = []
        for size, patch, profile in zip(spatial, patch_size, profiles, strict=True):
            total = np.zeros(size, dtype=np.float64)
            for start in _starts(size, patch, overlap):
                total[start : start + patch] += profile
            sums.append(total)
        self.axis0_weight = sums[0].astype(np.float32).reshape(-1, *([1] * (len(spatial) - 1)))
        self.plane_weight = _outer(sums[1:]).astype(np.float32)  # Shape: [*S[1:]]
        self.slab = np.zeros((out.shape[0], self.depth, *spatial[1:]), dtype=np.float32)
        self.row = 0  # first image row held by the slab

    def add(self, window: tuple[slice, ...], probs: np.ndarray) -> None:
        """Blend one patch's probabilities (Shape: [K, *P]; overwritten) into the image."""
        start = window[0].start
        if start < self.row:
            raise RuntimeError("patches must come in grid order (first axis outermost)")
        if start > self.row:
            self._advance(start)
        rows = slice(start - self.row, start - self.row + self.depth)
        probs *= self.importance  # the caller's batch array is scratch space
        self.slab[(slice(None), rows, *window[1:])] += probs

    def finish(self) -> np.ndarray:
        """Flush the remaining rows; returns ``out``."""
        self._flush(self.out.shape[1] - self.row)
        return self.out

    def _advance(self, start: int) -> None:
        """Flush rows before ``start`` and slide the slab so it begins there."""
        done = min(start - self.row, self.depth)
        self._flush(done)
        kept = self.depth - done
        if kept:  # overlapping rows move to the front of the slab
            self.slab[:, :kept] = self.slab[:, done:]
        self.slab[:, kept:] = 0.0
        self.row = start

    def _flush(self, count: int) -> None:
        """Normalise the first ``count`` slab rows and store them in ``out``."""
        rows = slice(self.row, self.row + count)
        inverse = np.reciprocal(self.axis0_weight[rows] * self.plane_weight)
        for index in range(self.out.shape[0]):
            np.multiply(self.slab[index, :count], inverse, out=self.out[index, rows], casting="same_kind")


def sliding_window_inference(
    image: np.ndarray,
    predict_batch: PredictBatch,
    patch_size: Sequence[int],
    *,
    num_classes: int,
    overlap: float = 0.5,
    batch_size: int = 1,
    mirror_axes: tuple[int, ...] | None = None,
    progress: bool = False,
    dtype: np.dtype | type = np.float32,
    activation: str = "softmax",
    importance: str = "seg",
) -> np.ndarray:
    """Predict a whole image patch by patch with Gaussian blending (and optional mirror TTA).

    Memory beyond the image and the result: one float32 slab of ``K * P[0] * S[1] * ...``
    voxels and one batch of patches.

    Args:
        image: Channel-first image. Shape: [C, *S].
        predict_batch: Maps a batch of patches to LOGITS. Shape: [B, C, *P] → [B, K, *P].
        patch_size: Spatial patch size P.
        num_classes: K, the model's output channels.
        overlap: Patch overlap fraction in [0, 1).
        batch_size: Patches per ``predict_batch`` call.
        mirror_axes: Spatial axes (0-based) to mirror for test-time augmentation; the probabilities are
            averaged over every subset of flips (2**len(mirror_axes) passes).
        progress: Show a tqdm bar over batches.
        dtype: Dtype of the result; float16 halves its memory (blending stays float32, the
            values are rounded once, to within 5e-4).
        activation: ``"softmax"`` over the channels (classes), ``"sigmoid"`` per channel
            (regions), or ``"none"`` (logits are blended; the caller activates once at the end).
        importance: The Gaussian's centring, ``seg`` or ``nnunet`` (see :func:`gaussian_importance_map`).

    Returns:
        Probabilities (or blended logits) on the image grid. Shape: [K, *S].
    """
    flips = _mirror_subsets(mirror_axes, _check_window_args(image, patch_size, activation))
    padded, crop = _pad_to_patch(image, patch_size)
    spatial = padded.shape[1:]
    windows = patch_grid(spatial, patch_size, overlap)
    blend = _StreamedBlend(np.empty((num_classes, *spatial), dtype), patch_size, overlap, importance=importance)
    step = max(1, batch_size)
    starts = range(0, len(windows), step)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="patches", unit="batch", leave=False)
    for start in starts:
        chunk = windows[start : start + step]
        batch = np.stack([padded[(slice(None), *window)] for window in chunk])
        probs = _predict_probabilities(batch, predict_batch, num_classes, flips, ACTIVATIONS[activation])
        for window, patch_probs in zip(chunk, probs, strict=True):
            blend.add(window, patch_probs)
    result = blend.finish()
    if all(c == slice(0, s) for c, s in zip(crop, spatial, strict=True)):
        return result
    return np.ascontiguousarray(result[(slice(None), *crop)])


def _check_window_args(image: np.ndarray, patch_size: Sequence[int], activation: str) -> int:
    """The image's spatial rank, after checking the patch and the activation against it."""
    ndim = image.ndim - 1
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    if len(patch_size) != ndim:
        raise ValueError(f"patch size {tuple(patch_size)} does not match a {ndim}D image of shape {image.shape}")
    return ndim


def _pad_to_patch(image: np.ndarray, patch_size: Sequence[int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Zero-pad axes shorter than the patch (centred); return the image and the crop back."""
    pads = [(0, 0)]
    crop = []
    for size, patch in zip(image.shape[1:], patch_size, strict=True):
        extra = max(patch - size, 0)
        pads.append((extra // 2, extra - extra // 2))
        crop.append(slice(extra // 2, extra // 2 + size))
    if all(p == (0, 0) for p in pads):
        return image.astype(np.float32, copy=False), tuple(crop)
    return np.pad(image.astype(np.float32, copy=False), pads, mode="constant"), tuple(crop)
