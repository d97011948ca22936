"""Our numpy parts against nnU-Net's own functions, on random inputs (integration: needs nnunetv2)."""

from __future__ import annotations

import numpy as np
import pytest

from seg_runtime.nnunet import Resampling
from seg_runtime.nnunet.prepare import nonzero_bbox, normalize_channel
from seg_runtime.nnunet.resample import resample
from seg_runtime.tiling import gaussian_importance_map, patch_grid

pytestmark = pytest.mark.integration
nnunetv2 = pytest.importorskip("nnunetv2")


@pytest.mark.parametrize(("shape", "new", "current", "target", "order"), [
    ((7, 20, 18), (15, 26, 23), (4.0, 1.0, 1.0), (2.0, 0.8, 0.8), 3),   # separate low-res axis, order_z 0
    ((20, 18, 16), (15, 26, 21), (1.0, 1.2, 1.0), (1.3, 0.8, 0.75), 3),  # isotropic: jointly
    ((15, 26, 23), (7, 20, 18), (2.0, 0.8, 0.8), (4.0, 1.0, 1.0), 1),   # logits back: linear
    ((1, 30, 28), (1, 21, 40), (999.0, 1.0, 1.0), (999.0, 1.4, 0.7), 3),  # a 2D image's slice axis
])
def test_resampling_matches_nnunet(shape, new, current, target, order) -> None:
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape

    data = np.random.default_rng(0).normal(0, 1, (2, *shape)).astype(np.float32)
    theirs = resample_data_or_seg_to_shape(data, new, current, target, is_seg=False, order=order, order_z=0,
                                           force_separate_z=None)
    ours = resample(data, new, current, target, Resampling(order=order, order_z=0))
    assert ours.shape == theirs.shape and np.abs(ours - theirs).max() < 1e-5


@pytest.mark.parametrize("size", [(32, 40, 40), (20, 17, 9), (1, 48, 40)])
def test_gaussian_and_steps_match_nnunet(size) -> None:
    import torch
    from nnunetv2.inference.sliding_window_prediction import (
        compute_gaussian,
        compute_steps_for_sliding_window,
    )

    theirs = compute_gaussian(size, 1 / 8, 1, dtype=torch.float32, device=torch.device("cpu")).numpy()
    ours = gaussian_importance_map(size, kind="nnunet")
    assert np.abs(ours / ours.max() - theirs / theirs.max()).max() < 1e-6
    image = tuple(s * 3 + 5 for s in size)
    steps = compute_steps_for_sliding_window(image[1:], size[1:], 0.5)
    grid = patch_grid(image[1:], size[1:], 0.5)
    assert sorted({w[0].start for w in grid}) == steps[0] and sorted({w[1].start for w in grid}) == steps[1]


def test_crop_and_normalisation_match_nnunet() -> None:
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import (
        CTNormalization,
        ZScoreNormalization,
    )

    rng = np.random.default_rng(3)
    data = np.zeros((2, 14, 16, 12), np.float32)
    data[0, 3:11, 2:13, 4:9] = rng.normal(4, 2, (8, 11, 5))
    data[0, 6, 7, 6] = 0
    data[1, 2, 3, 3] = 1
    cropped, seg, bbox = crop_to_nonzero(data.copy())
    mask, ours = nonzero_bbox(data)
    assert [list(b) for b in ours] == [list(map(int, b)) for b in bbox]
    box = tuple(slice(lo, hi) for lo, hi in ours)
    theirs = ZScoreNormalization(use_mask_for_norm=True, intensityproperties={}).run(cropped[0].copy(), seg[0])
    mine = data[0][box].copy()
    normalize_channel(mine, {"scheme": "zscore", "use_mask": True}, mask[box])
    assert np.abs(mine - theirs).max() < 1e-5
    stats = {"mean": 3.0, "std": 1.5, "percentile_00_5": 0.5, "percentile_99_5": 7.0}
    theirs = CTNormalization(use_mask_for_norm=False, intensityproperties=stats).run(cropped[0].copy(), seg[0])
    mine = data[0][box].copy()
    normalize_channel(mine, {"scheme": "ct", "mean": 3.0, "std": 1.5, "lower": 0.5, "upper": 7.0}, None)
    assert np.abs(mine - theirs).max() < 1e-6
