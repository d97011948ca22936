"""Gaussian map, patch grid coverage, and sliding-window inference against whole-image results."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from runtime_helpers import pointwise_logits

from seg_runtime.tiling import gaussian_importance_map, patch_grid, sigmoid, sliding_window_inference, softmax

RNG = np.random.default_rng(0)
WEIGHT = RNG.normal(size=(4, 2)).astype(np.float32)
BIAS = RNG.normal(size=4).astype(np.float32)


def pointwise_batch(x: np.ndarray) -> np.ndarray:
    """A numpy 1x1 conv over a batch. Shape: [B, 2, *P] → [B, 4, *P]."""
    return np.stack([pointwise_logits(sample, WEIGHT, BIAS) for sample in x])


def test_gaussian_importance_map() -> None:
    weights = gaussian_importance_map((9, 8, 5))
    assert weights.shape == (9, 8, 5) and weights.dtype == np.float32
    assert weights.max() == pytest.approx(1.0) and weights.min() > 0
    np.testing.assert_allclose(weights, weights[::-1, ::-1, ::-1], rtol=1e-6)  # symmetric
    assert np.unravel_index(np.argmax(weights), weights.shape) == (4, 3, 2)
    assert gaussian_importance_map((200,), sigma_scale=0.01).min() > 0


@pytest.mark.parametrize(
    ("shape", "patch", "overlap"),
    [
        ((20, 17, 8), (8, 8, 8), 0.5),
        ((9,), (9,), 0.5),
        ((31, 12), (7, 5), 0.25),
        ((100,), (10,), 0.0),
        ((13, 40), (4, 6), 0.9),
    ],
)
def test_patch_grid_covers_and_is_flush(
    shape: tuple[int, ...], patch: tuple[int, ...], overlap: float
) -> None:
    windows = patch_grid(shape, patch, overlap)
    coverage = np.zeros(shape, dtype=int)
    for window in windows:
        assert all(s.stop - s.start == p for s, p in zip(window, patch, strict=True))
        coverage[window] += 1
    assert coverage.min() >= 1
    for axis, (size, p) in enumerate(zip(shape, patch, strict=True)):
        starts = sorted({w[axis].start for w in windows})
        assert starts[0] == 0 and starts[-1] + p == size
        assert max(np.diff(starts), default=0) <= max(p * (1 - overlap), 1) + 0.5


def test_patch_grid_rejects_small_images_and_bad_overlap() -> None:
    with pytest.raises(ValueError, match="smaller than the patch"):
        patch_grid((4, 10), (8, 8), 0.5)
    with pytest.raises(ValueError, match="overlap"):
        patch_grid((10,), (8,), 1.0)


@pytest.mark.parametrize(
    ("shape", "patch", "batch_size"),
    [((23, 17, 11), (8, 8, 8), 3), ((5, 20, 3), (8, 8, 8), 1), ((30, 19), (8, 12), 4), ((8, 8), (8, 8), 2)],
)
def test_sliding_window_equals_whole_image_for_pointwise_model(
    shape: tuple[int, ...], patch: tuple[int, ...], batch_size: int
) -> None:
    image = RNG.normal(size=(2, *shape)).astype(np.float32)
    probs = sliding_window_inference(
        image, pointwise_batch, patch, num_classes=4, overlap=0.5, batch_size=batch_size
    )
    expected = softmax(pointwise_logits(image, WEIGHT, BIAS)[None])[0]
    assert probs.shape == (4, *shape) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_mirror_tta_averages_flipped_predictions() -> None:
    image = RNG.normal(size=(2, 6, 7)).astype(np.float32)

    def shifting(x: np.ndarray) -> np.ndarray:
        # Not flip-equivariant: logits depend on the left neighbour along the last axis.
        return pointwise_batch(x + np.roll(x, 1, axis=-1))

    result = sliding_window_inference(image, shifting, (6, 7), num_classes=4, mirror_axes=(0, 1))
    expected = np.zeros((4, 6, 7))
    subsets = [s for r in range(3) for s in itertools.combinations((2, 3), r)]
    for axes in subsets:
        flipped = np.flip(image[None], axes) if axes else image[None]
        out = softmax(shifting(np.ascontiguousarray(flipped)))
        expected += (np.flip(out, axes) if axes else out)[0]
    np.testing.assert_allclose(result, expected / len(subsets), atol=1e-5)
    plain = sliding_window_inference(image, shifting, (6, 7), num_classes=4)
    assert not np.allclose(plain, result)
    # A pointwise model is flip-equivariant: TTA changes nothing.
    tta = sliding_window_inference(image, pointwise_batch, (4, 4), num_classes=4, mirror_axes=(0, 1))
    np.testing.assert_allclose(
        tta, sliding_window_inference(image, pointwise_batch, (4, 4), num_classes=4), atol=1e-5
    )


def test_sigmoid_activation_for_region_outputs() -> None:
    image = RNG.normal(size=(2, 9, 11)).astype(np.float32)
    result = sliding_window_inference(
        image, pointwise_batch, (4, 5), num_classes=4, overlap=0.5, activation="sigmoid", mirror_axes=(0,)
    )
    expected = 1.0 / (1.0 + np.exp(-pointwise_logits(image, WEIGHT, BIAS)))
    np.testing.assert_allclose(result, expected, atol=1e-5)
    assert not np.allclose(result.sum(axis=0), 1.0)  # independent channels, not a softmax
    np.testing.assert_allclose(sigmoid(np.array([-100.0, 0.0, 100.0])), [0.0, 0.5, 1.0], atol=1e-7)
    with pytest.raises(ValueError, match="activation must be one of softmax, sigmoid"):
        sliding_window_inference(image, pointwise_batch, (4, 5), num_classes=4, activation="relu")


def test_wrong_model_output_shape_is_reported() -> None:
    with pytest.raises(
        ValueError, match=r"predict_batch returned shape \(1, 4, 8, 8\), expected \(1, 3, 8, 8\)"
    ):
        sliding_window_inference(np.zeros((2, 8, 8), np.float32), pointwise_batch, (8, 8), num_classes=3)


def _position_dependent(x: np.ndarray) -> np.ndarray:
    """Logits that depend on the position inside the patch, so overlapping patches disagree."""
    ramp = np.linspace(-2.0, 2.0, x.shape[2]).reshape(1, 1, -1, *([1] * (x.ndim - 3)))
    logits = pointwise_batch(x)
    logits[:, 1:2] += ramp
    return logits


def _dense_reference(
    image: np.ndarray, patch: tuple[int, ...], overlap: float, num_classes: int
) -> np.ndarray:
    """Blending with full-size accumulators (the textbook form the streamed one must equal)."""
    importance = gaussian_importance_map(patch).astype(np.float64)
    accumulated = np.zeros((num_classes, *image.shape[1:]))
    weights = np.zeros(image.shape[1:])
    for window in patch_grid(image.shape[1:], patch, overlap):
        probs = softmax(_position_dependent(image[(slice(None), *window)][None]))[0]
        accumulated[(slice(None), *window)] += probs * importance
        weights[window] += importance
    return accumulated / weights


@pytest.mark.parametrize(
    ("shape", "patch", "overlap", "batch_size"),
    [
        ((23, 17, 11), (8, 8, 8), 0.5, 3),
        ((40, 9, 10), (6, 9, 4), 0.25, 1),
        ((33, 21), (8, 12), 0.75, 5),
        ((50,), (7,), 0.5, 2),
    ],
)
def test_streamed_blending_equals_dense_accumulation(
    shape: tuple[int, ...], patch: tuple[int, ...], overlap: float, batch_size: int
) -> None:
    image = RNG.normal(size=(2, *shape)).astype(np.float32)
    expected = _dense_reference(image, patch, overlap, 4)
    kwargs = {"num_classes": 4, "overlap": overlap, "batch_size": batch_size}
    probs = sliding_window_inference(image, _position_dependent, patch, **kwargs)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs, expected, atol=2e-6)
    half = sliding_window_inference(image, _position_dependent, patch, dtype=np.float16, **kwargs)
    assert half.dtype == np.float16 and half.shape == expected.shape
    np.testing.assert_allclose(half.astype(np.float64), expected, atol=5e-4)
