"""Gaussian-weighted sliding-window inference over any ``predict_batch`` callable (numpy).

The torch path reuses the importance map and patch grid; the ONNX path uses all of it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

PredictBatch = Callable[[np.ndarray], np.ndarray]


def gaussian_importance_map(patch_size: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Separable Gaussian centred on the patch, peak 1, no zeros.

    Patch borders get low weight because a network's edge predictions lack context.

    Args:
        patch_size: Spatial patch size.
        sigma_scale: Sigma as a fraction of the patch size per axis.

    Returns:
        The weights, float32, max 1 and strictly positive. Shape: ``patch_size``.
    """
    weights = np.ones((), dtype=np.float64)
    for size in patch_size:
        centre = (size - 1) / 2.0
        sigma = max(size * sigma_scale, 1e-6)
        profile = np.exp(-0.5 * ((np.arange(size) - centre) / sigma) ** 2)
        weights = np.multiply.outer(weights, profile)
    weights = (weights / weights.max()).astype(np.float32)
    positive = weights[weights > 0]
    # Underflowed corners would get zero weight and divide by zero when blending.
    weights[weights <= 0] = positive.min()
    return weights


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
    """Numerically stable softmax in float32."""
    shifted = logits.astype(np.float32) - logits.max(axis=axis, keepdims=True).astype(np.float32)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted


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
    batch: np.ndarray, predict_batch: PredictBatch, num_classes: int, flips: list[tuple[int, ...]]
) -> np.ndarray:
    """Softmax of the model, averaged over the mirrored copies of the batch. Shape: [B, K, *P]."""
    total: np.ndarray | None = None
    for flip in flips:
        inputs = np.ascontiguousarray(np.flip(batch, flip)) if flip else batch
        logits = np.asarray(predict_batch(inputs))
        expected = (batch.shape[0], num_classes, *batch.shape[2:])
        if logits.shape != expected:
            raise ValueError(f"predict_batch returned shape {logits.shape}, expected {expected}")
        probs = softmax(logits)
        probs = np.flip(probs, flip) if flip else probs
        total = probs if total is None else total + probs
    return total / len(flips)


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
) -> np.ndarray:
    """Predict a whole image patch by patch with Gaussian blending (and optional mirror TTA).

    Args:
        image: Channel-first image. Shape: [C, *S].
        predict_batch: Maps a batch of patches to LOGITS. Shape: [B, C, *P] → [B, K, *P].
        patch_size: Spatial patch size P.
        num_classes: K.
        overlap: Patch overlap fraction in [0, 1).
        batch_size: Patches per ``predict_batch`` call.
        mirror_axes: Spatial axes (0-based) to mirror for test-time augmentation; the softmax is
            averaged over every subset of flips (2**len(mirror_axes) passes).
        progress: Show a tqdm bar over batches.

    Returns:
        Softmax probabilities on the image grid, float32. Shape: [K, *S].
    """
    ndim = image.ndim - 1
    if len(patch_size) != ndim:
        raise ValueError(
            f"patch size {tuple(patch_size)} does not match a {ndim}D image of shape {image.shape}"
        )
    padded, crop = _pad_to_patch(image, patch_size)
    spatial = padded.shape[1:]
    importance = gaussian_importance_map(patch_size)
    accumulated = np.zeros((num_classes, *spatial), dtype=np.float32)
    weights = np.zeros(spatial, dtype=np.float32)
    windows = patch_grid(spatial, patch_size, overlap)
    flips = _mirror_subsets(mirror_axes, ndim)
    starts = range(0, len(windows), max(1, batch_size))
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="patches", unit="batch", leave=False)
    for start in starts:
        chunk = windows[start : start + max(1, batch_size)]
        batch = np.stack([padded[(slice(None), *window)] for window in chunk])
        probs = _predict_probabilities(batch, predict_batch, num_classes, flips)
        for window, patch_probs in zip(chunk, probs, strict=True):
            accumulated[(slice(None), *window)] += patch_probs * importance
            weights[window] += importance
    accumulated /= weights
    return np.ascontiguousarray(accumulated[(slice(None), *crop)])


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
