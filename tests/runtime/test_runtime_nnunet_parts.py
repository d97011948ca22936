"""The numpy parts behind imported nnU-Net models (no nnunetv2 needed; tests/nnunet checks them
against nnU-Net's own functions)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seg_runtime.geometry import make_geometry
from seg_runtime.nnunet import NnunetPostprocessor, NnunetSpec, Resampling
from seg_runtime.nnunet.prepare import nonzero_bbox, normalize_channel, prepare, restore
from seg_runtime.nnunet.resample import new_shape, resample, separate_axis
from seg_runtime.tiling import gaussian_importance_map, patch_grid


def _spec(**changes: object) -> NnunetSpec:
    settings = {"network_dims": 3, "transpose_forward": [0, 1, 2], "target_spacing": [1.0, 1.0, 1.0],
                "normalization": [{"scheme": "none"}], "crop_fill": [1e4, -1e4]}
    return NnunetSpec.from_dict({**settings, **changes})


def test_nnunets_gaussian_is_a_blurred_delta_at_the_voxel_size_over_2() -> None:
    from scipy.ndimage import gaussian_filter

    for patch in ((8, 12, 9), (1, 16, 10)):
        delta = np.zeros(patch)
        delta[tuple(s // 2 for s in patch)] = 1
        expected = gaussian_filter(delta, [s / 8 for s in patch], mode="constant")
        ours = gaussian_importance_map(patch, kind="nnunet")
        assert np.allclose(ours / ours.max(), expected / expected.max(), atol=1e-6)
    seg = gaussian_importance_map((8, 8), kind="seg")
    assert np.allclose(seg, seg[::-1, ::-1])  # seg's is centred between voxels 3 and 4; nnU-Net's on 4


@pytest.mark.parametrize(("size", "patch"), [(110, 64), (64, 64), (97, 32), (33, 32), (200, 48)])
def test_patch_starts_follow_nnunets_step_rule(size: int, patch: int) -> None:
    count = math.ceil((size - patch) / (patch * 0.5)) + 1
    step = (size - patch) / (count - 1) if count > 1 else 0
    expected = [int(np.round(step * i)) for i in range(count)]
    assert [w[0].start for w in patch_grid((size,), (patch,), 0.5)] == expected
    assert [w[0].start for w in patch_grid((5,), (1,), 0.5)] == [0, 1, 2, 3, 4]  # 2d models: every slice


def test_the_crop_spans_any_channels_non_zero_voxels_with_holes_filled() -> None:
    image = np.zeros((2, 6, 7, 8), np.float32)
    image[0, 1:4, 2:5, 3:6] = 1
    image[0, 2, 3, 4] = 0  # a hole: filled, not a reason to crop
    image[1, 4, 1, 1] = 2
    mask, bbox = nonzero_bbox(image)
    assert bbox == ((1, 5), (1, 5), (1, 6)) and mask[2, 3, 4]
    assert nonzero_bbox(np.zeros((1, 3, 4, 5)))[1] == ((0, 3), (0, 4), (0, 5))


def test_normalisations() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(5, 2, (6, 6, 6)).astype(np.float32)
    x[:2] = 0
    mask = x != 0
    masked = x.copy()
    normalize_channel(masked, {"scheme": "zscore", "use_mask": True}, mask)
    assert np.all(masked[:2] == 0) and abs(masked[mask].mean()) < 1e-5 and abs(masked[mask].std() - 1) < 1e-4
    whole = x.copy()
    normalize_channel(whole, {"scheme": "zscore", "use_mask": False}, mask)
    assert abs(whole.mean()) < 1e-5 and abs(whole.std() - 1) < 1e-4
    ct = np.array([-2000.0, 0.0, 50.0, 3000.0], np.float32)
    normalize_channel(ct, {"scheme": "ct", "mean": 40.0, "std": 10.0, "lower": -100.0, "upper": 200.0}, None)
    assert np.allclose(ct, [-14.0, -4.0, 1.0, 16.0])
    scaled = np.array([2.0, 4.0, 6.0], np.float32)
    normalize_channel(scaled, {"scheme": "rescale_to_0_1"}, None)
    assert np.allclose(scaled, [0, 0.5, 1])


def test_the_low_resolution_axis_is_resampled_apart_only_when_anisotropic() -> None:
    settings = Resampling(order=3, order_z=0)
    assert separate_axis((4.0, 1.0, 1.0), (1.0, 1.0, 1.0), settings) == 0
    assert separate_axis((1.0, 1.0, 1.0), (1.0, 5.0, 1.0), settings) == 1  # the new spacing decides next
    assert separate_axis((2.0, 1.0, 1.0), (1.0, 1.0, 1.0), settings) is None
    assert separate_axis((4.0, 4.0, 1.0), (1.0, 1.0, 1.0), settings) is None  # two low-res axes: jointly
    assert separate_axis((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), Resampling(force_separate_z=True)) is None
    assert new_shape((10, 20, 30), (4.0, 1.0, 0.5), (2.0, 1.5, 1.0)) == (20, 13, 15)


def test_resampling_orders_and_range() -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(0, 1, (2, 5, 12, 10)).astype(np.float32)
    assert resample(data, (5, 12, 10), (1, 1, 1), (1, 1, 1), Resampling()) is data
    up = resample(data, (9, 20, 17), (4.0, 1.0, 1.0), (2.0, 0.6, 0.6), Resampling(order=3, order_z=0))
    assert up.shape == (2, 9, 20, 17) and up.dtype == np.float32
    assert up.min() >= data.min() - 1e-6 and up.max() <= data.max() + 1e-6  # cubic splines, clipped
    # order_z 0 along the separate axis: every output slice is an interpolated copy of one input slice
    planes = resample(data, (9, 12, 10), (4.0, 1.0, 1.0), (2.0, 1.0, 1.0), Resampling(order=3, order_z=0))
    assert all(any(np.allclose(planes[0, i], data[0, j], atol=1e-6) for j in range(5)) for i in range(9))
    linear = resample(data, (9, 12, 10), (4.0, 1.0, 1.0), (2.0, 1.0, 1.0), Resampling(order=1, order_z=1))
    # output slice 1 sits at (1 + 0.5) * 5 / 9 - 0.5 = 1/3 of the way from input slice 0 to 1
    assert np.allclose(linear[0, 1], 2 / 3 * data[0, 0] + 1 / 3 * data[0, 1], atol=1e-5)


def test_prepare_and_restore_walk_nnunets_axes_and_crop_both_ways() -> None:
    image = np.zeros((1, 6, 7, 8), np.float32)  # stored (i, j, k)
    image[0, 1:5, 2:6, 3:7] = np.arange(4 * 4 * 4).reshape(4, 4, 4) + 1
    geometry = make_geometry(np.diag([1.0, 2.0, 3.0, 1.0]), (6, 7, 8), "nifti")
    spec = _spec(transpose_forward=[1, 0, 2], target_spacing=[2.0, 3.0, 1.0])
    prepared, state = prepare(image, geometry, spec)
    # nnU-Net's axes: reversed (k, j, i) with spacing (3, 2, 1), then transposed to (j, k, i)
    assert state.spacing == (2.0, 3.0, 1.0) and state.bbox == ((2, 6), (3, 7), (1, 5))
    assert np.array_equal(prepared[0], image[0, 1:5, 2:6, 3:7].transpose(1, 2, 0))
    logits = np.stack([prepared[0], -prepared[0]])
    back = restore(logits, state, spec, first_channel=0)
    assert back.shape == (2, 6, 7, 8) and np.array_equal(back[0, 1:5, 2:6, 3:7], image[0, 1:5, 2:6, 3:7])
    assert back[0, 0, 0, 0] == 1e4 and back[1, 0, 0, 0] == -1e4  # outside the crop: background
    assert restore(logits[1:], state, spec, first_channel=1)[0, 0, 0, 0] == -1e4


def test_a_2d_image_gets_a_slice_axis_and_loses_it_again() -> None:
    image = np.arange(1, 13, dtype=np.float32).reshape(1, 3, 4)
    geometry = make_geometry(np.diag([0.5, 0.25, 1.0, 1.0]), (3, 4), "nifti")
    spec = _spec(network_dims=2, target_spacing=[0.25, 0.5])
    prepared, state = prepare(image, geometry, spec)
    assert prepared.shape == (1, 1, 4, 3) and state.spacing == (999 * 0.5, 0.25, 0.5)
    assert np.array_equal(prepared[0, 0], image[0].T)
    assert np.array_equal(restore(prepared, state, spec)[0], image[0])


def test_nnunets_keep_largest_counts_corner_neighbours_and_keeps_ties() -> None:
    labels = np.zeros((5, 5, 5), np.uint8)
    labels[0, 0, 0] = labels[1, 1, 1] = 1  # corner-connected: one component of two
    labels[4, 4, 4] = 1
    labels[3, 0, 4] = 2
    labels[0, 4, 0] = 2  # two single-voxel components of label 2: a tie, both kept
    out = NnunetPostprocessor([(1,), (2,)]).apply(labels.copy(), 1.0)
    assert out[0, 0, 0] == out[1, 1, 1] == 1 and out[4, 4, 4] == 0
    assert out[3, 0, 4] == out[0, 4, 0] == 2


def test_settings_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="preprocess.transpose_forward"):
        _spec(transpose_forward=[0, 0, 2])
    with pytest.raises(ValueError, match=r"preprocess.normalization\[0\].mean"):
        _spec(normalization=[{"scheme": "ct"}])
    with pytest.raises(ValueError, match="preprocess.resample_data"):
        _spec(resample_data={"order": 9})
