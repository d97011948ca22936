"""Region outputs: which label each region paints, and decoding sigmoid maps into label maps."""

from __future__ import annotations

import numpy as np
import pytest

from seg_runtime.outputs import output_channels, paint_regions, region_paint_labels

BRATS = {"whole_tumour": [1, 2, 3, 4], "tumour_core": [1, 3, 4], "enhancing_tumour": [4]}


def test_brats_regions_paint_edema_core_and_enhancing() -> None:
    assert region_paint_labels(BRATS) == [2, 1, 4]
    assert output_channels("regions", 5, BRATS) == 3
    assert output_channels("classes", 5, BRATS) == 5


@pytest.mark.parametrize(
    ("regions", "needle"),
    [
        ({}, "at least one region"),
        ({"enhancing_tumour": [4], "whole_tumour": [1, 2, 3, 4], "tumour_core": [1, 3, 4]}, "'enhancing_tumour'"),
        ({"empty": [0]}, "'empty'"),
    ],
)
def test_regions_that_cannot_be_painted_are_named(regions: dict[str, list[int]], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        region_paint_labels(regions)


def test_paint_regions_later_regions_win() -> None:
    # voxel 0: nothing; 1: whole only; 2: whole + core; 3: all three; 4: core without whole
    probs = np.array(
        [[0.1, 0.9, 0.9, 0.9, 0.2], [0.1, 0.2, 0.8, 0.8, 0.7], [0.4, 0.1, 0.3, 0.6, 0.1]], np.float32
    )
    labels = paint_regions(probs, region_paint_labels(BRATS))
    assert labels.tolist() == [0, 2, 1, 4, 1]
    assert labels.dtype == np.uint8
    with pytest.raises(ValueError, match="3 region channels but 2 paint labels"):
        paint_regions(probs, [2, 1])
