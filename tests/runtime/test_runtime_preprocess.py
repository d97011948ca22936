"""Normalisation values, reorientation/resampling and their exact inverse."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_helpers import oblique_affine

from seg_runtime.geometry import make_geometry
from seg_runtime.preprocess import (
    PreprocessSpec,
    normalize,
    preprocess_image,
    preprocess_label,
    restore_to_input,
)

AFFINES = {
    "ras": np.diag([1.0, 1.0, 1.0, 1.0]),
    "lps": np.diag([-0.7, -0.8, 2.0, 1.0]),
    "flipped_transposed": np.array(
        [[0, 0, -1.5, 3], [-1, 0, 0, 2], [0, 1.2, 0, 1], [0, 0, 0, 1]], dtype=float
    ),
    "oblique": oblique_affine(),
}


def test_zscore_whole_image() -> None:
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    out = normalize(x, [{"scheme": "zscore", "nonzero": False}])
    np.testing.assert_allclose(out, (x - 2.5) / np.std([1, 2, 3, 4]), rtol=1e-6)


def test_zscore_nonzero_keeps_zeros() -> None:
    x = np.array([[0.0, 2.0, 0.0, 4.0]], dtype=np.float32)
    out = normalize(x, [{"scheme": "zscore", "nonzero": True}])
    np.testing.assert_allclose(out, [[0.0, -1.0, 0.0, 1.0]], atol=1e-6)


def test_chunked_statistics_match_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    import seg_runtime.preprocess as preprocess

    monkeypatch.setattr(preprocess, "_CHUNK", 7)  # many chunks, a ragged last one
    x = (np.random.default_rng(0).normal(size=(2, 9, 5, 3)) * 50 + 300).astype(np.float32)
    x[1, :3] = 0
    mean, std = preprocess._mean_std(x[0])
    assert mean == pytest.approx(float(x[0].mean(dtype=np.float64)), rel=1e-12)
    assert std == pytest.approx(float(x[0].std(dtype=np.float64)), rel=1e-10)
    out = normalize(x, [{"scheme": "zscore", "nonzero": False}, {"scheme": "zscore", "nonzero": True}])
    reference = (x[0].astype(np.float64) - x[0].mean(dtype=np.float64)) / x[0].std(dtype=np.float64)
    np.testing.assert_allclose(out[0], reference, atol=2e-6)
    values = x[1][x[1] != 0].astype(np.float64)
    np.testing.assert_allclose(out[1][x[1] != 0], (values - values.mean()) / values.std(), atol=2e-6)
    assert (out[1][:3] == 0).all() and out.dtype == np.float32
    assert x[0, 0, 0, 0] > 100  # the input is left alone


def test_fixed_and_minmax_per_channel() -> None:
    x = np.array([[-2000.0, 0.0, 40.0, 3000.0], [0.0, 5.0, 10.0, 20.0]], dtype=np.float32)
    entries = [
        {"scheme": "fixed", "clip": [-1000, 1000], "mean": 40.0, "std": 400.0},
        {"scheme": "minmax", "lo": 0.0, "hi": 10.0},
    ]
    out = normalize(x, entries)
    np.testing.assert_allclose(out[0], (np.array([-1000, 0, 40, 1000]) - 40) / 400, rtol=1e-6)
    np.testing.assert_allclose(out[1], [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(normalize(x, [{"scheme": "none"}]), x)


def test_spec_validation_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"normalization\[0\]"):
        PreprocessSpec(normalization=[{"scheme": "bogus"}])
    with pytest.raises(ValueError, match=r"normalization\[1\]\.std"):
        PreprocessSpec(normalization=[{"scheme": "none"}, {"scheme": "fixed", "mean": 0}])
    with pytest.raises(ValueError, match="orientation"):
        PreprocessSpec(orientation="XYZ")
    spec = PreprocessSpec(orientation="LPS", target_spacing=[1, 2, 3], normalization=[{"scheme": "none"}])
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_orientation_round_trip_is_exact(name: str) -> None:
    affine = AFFINES[name]
    image = np.random.default_rng(0).normal(size=(2, 5, 6, 7)).astype(np.float32)
    geometry = make_geometry(affine, image.shape[1:], "nifti")
    out, state = preprocess_image(image, geometry, PreprocessSpec(normalization=[{"scheme": "none"}]))
    # Reoriented to RAS: voxel axes now point (roughly) along +x, +y, +z.
    assert sorted(out.shape[1:]) == sorted(image.shape[1:])
    restored = restore_to_input(out, state)
    np.testing.assert_array_equal(restored, image)
    label = (image[0] > 0).astype(np.uint8)
    np.testing.assert_array_equal(
        restore_to_input(preprocess_label(label, geometry, PreprocessSpec())[None], state, labels=True)[0],
        label,
    )


def test_reoriented_image_is_ras() -> None:
    image = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)
    geometry = make_geometry(np.diag([-1.0, -1.0, 1.0, 1.0]), (2, 3, 4), "nifti")
    out, _ = preprocess_image(image, geometry, PreprocessSpec(normalization=[{"scheme": "none"}]))
    np.testing.assert_array_equal(out[0], image[0, ::-1, ::-1, :])


@pytest.mark.parametrize("name", ["lps", "oblique"])
def test_resampling_round_trip_is_shape_exact(name: str) -> None:
    affine = AFFINES[name]
    shape = (9, 11, 7)
    i, j, k = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
    image = (i + 2 * j + 3 * k)[None].astype(np.float32)
    geometry = make_geometry(affine, shape, "nifti")
    spec = PreprocessSpec(target_spacing=[1.0, 1.0, 1.0], normalization=[{"scheme": "none"}])
    out, state = preprocess_image(image, geometry, spec)
    assert out.shape[0] == 1 and state.output_shape == out.shape[1:]
    # The physical extent is kept (to within one 1 mm voxel) whatever the axis permutation.
    extents = sorted(n * s for n, s in zip(shape, geometry.spacing, strict=True))
    np.testing.assert_allclose(sorted(out.shape[1:]), extents, atol=0.5)
    restored = restore_to_input(out, state)
    assert restored.shape == image.shape
    # Linear content survives a down/up round trip up to boundary effects.
    assert np.mean(np.abs(restored - image)) < 0.15
    label = preprocess_label((image[0] > 3).astype(np.uint8), geometry, spec)
    assert label.shape == state.output_shape and label.dtype == np.uint8
    assert restore_to_input(label[None], state, labels=True).shape == image.shape


def test_new_shape_is_round_of_shape_times_spacing_over_target() -> None:
    geometry = make_geometry(np.diag([0.5, 2.0, 3.0, 1.0]), (10, 7, 5), "nifti")
    spec = PreprocessSpec(target_spacing=[1.0, 1.5, 2.0], normalization=[{"scheme": "none"}])
    out, _ = preprocess_image(np.ones((1, 10, 7, 5), np.float32), geometry, spec)
    assert out.shape[1:] == (5, 9, 8)  # round(10*.5/1), round(7*2/1.5)=round(9.33), round(5*3/2)=round(7.5)=8
    np.testing.assert_allclose(out, 1.0)


def test_2d_ignores_orientation_and_resamples() -> None:
    image = np.random.default_rng(0).random((3, 8, 6)).astype(np.float32)
    geometry = make_geometry(np.eye(4), (8, 6), "png")
    spec = PreprocessSpec(orientation="RAS", target_spacing=[2.0, 1.0], normalization=[{"scheme": "none"}])
    out, state = preprocess_image(image, geometry, spec)
    assert out.shape == (3, 4, 6)
    assert restore_to_input(out, state).shape == image.shape
    same, state = preprocess_image(image, geometry, PreprocessSpec(normalization=[{"scheme": "none"}]))
    np.testing.assert_array_equal(same, image)


def test_spacing_follows_the_axes_through_reorientation() -> None:
    # Voxel axes point along -y (1 mm), +z (1.2 mm) and -x (1.5 mm): RAS order is (axis2, axis0, axis1).
    geometry = make_geometry(AFFINES["flipped_transposed"], (10, 20, 30), "nifti")
    spec = PreprocessSpec(target_spacing=[1.0, 1.0, 1.0], normalization=[{"scheme": "none"}])
    out, state = preprocess_image(np.ones((1, 10, 20, 30), np.float32), geometry, spec)
    assert state.oriented_shape == (30, 10, 20)
    assert out.shape[1:] == (45, 10, 24)
    assert restore_to_input(out, state).shape == (1, 10, 20, 30)
