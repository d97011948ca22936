"""keep_largest: islands of a class or region go to background, the main object keeps its labels."""

from __future__ import annotations

import numpy as np
import pytest

from seg_runtime.postprocess import (
    keep_largest_components,
    postprocess_labels,
    remove_small_components,
    structure_members,
)

LABELS = {"background": 0, "edema": 1, "core": 2, "vessel": 3}
REGIONS = {"whole": [1, 2]}


def _volume() -> np.ndarray:
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:10, 2:10, 2:10] = 1  # the tumour: edema ...
    labels[4:8, 4:8, 4:8] = 2  # ... around a core
    labels[15:17, 15:17, 15:17] = 2  # a stray core island (8 voxels)
    labels[18, 0, 0] = 1  # a stray edema voxel
    labels[0:2, 15:20, 0] = 3  # two vessel pieces: not post-processed here
    labels[5, 15:20, 0] = 3
    return labels


def test_region_keeps_its_largest_component_with_class_labels() -> None:
    labels = _volume()
    before = labels.copy()
    out = keep_largest_components(labels, ["whole"], LABELS, REGIONS)
    assert out is labels
    assert labels[16, 16, 16] == 0 and labels[18, 0, 0] == 0  # islands removed
    kept = np.zeros_like(before, dtype=bool)
    kept[2:10, 2:10, 2:10] = True
    np.testing.assert_array_equal(labels[kept], before[kept])  # edema and core inside untouched
    np.testing.assert_array_equal(labels == 3, before == 3)  # other classes untouched
    assert set(np.unique(before[labels != before])) == {1, 2} and not labels[labels != before].any()


def test_class_name_and_order() -> None:
    labels = _volume()
    keep_largest_components(labels, ["core"], LABELS, REGIONS)
    assert labels[16, 16, 16] == 0  # core island gone ...
    assert labels[18, 0, 0] == 1  # ... an edema island is not core
    assert (labels == 2).sum() == 4**3


def test_face_connectivity_and_2d() -> None:
    labels = np.zeros((6, 6), np.uint8)
    labels[0:3, 0:3] = 1
    labels[3, 3] = 1  # touches the block only at a corner: a separate component
    keep_largest_components(labels, ["edema"], LABELS, REGIONS)
    assert labels[3, 3] == 0 and labels[0:3, 0:3].all()


def test_empty_and_single_component_are_unchanged() -> None:
    empty = np.zeros((5, 5, 5), np.uint8)
    assert not keep_largest_components(empty, ["whole", "vessel"], LABELS, REGIONS).any()
    one = np.zeros((5, 5, 5), np.uint8)
    one[1:3, 1:3, 1:3] = 2
    np.testing.assert_array_equal(keep_largest_components(one.copy(), ["whole"], LABELS, REGIONS), one)


def test_unknown_or_background_names_list_the_choices() -> None:
    for name in ("tumor", "background"):
        with pytest.raises(ValueError, match=r"not a foreground class or region; valid: edema, core, vessel, whole"):
            structure_members(name, LABELS, REGIONS)
    assert structure_members("whole", LABELS, {"whole": [0, 2, 1]}) == [1, 2]


def test_remove_small_counts_volume_in_the_voxel_units() -> None:
    labels = _volume()
    before = labels.copy()
    # voxels of 2 mm³: the 8-voxel core island is 16 mm³, the stray edema voxel 2 mm³.
    remove_small_components(labels, {"core": 16.5, "edema": 1.0}, LABELS, REGIONS, voxel_volume=2.0)
    assert labels[16, 16, 16] == 0 and (labels == 2).sum() == 4**3  # island < 16.5 mm³ gone, core kept
    assert labels[18, 0, 0] == 1  # 2 mm³ >= 1 mm³: kept
    again = before.copy()
    remove_small_components(again, {"core": 16.0}, LABELS, REGIONS, voxel_volume=2.0)
    assert again[16, 16, 16] == 2  # exactly the minimum volume is kept
    both = remove_small_components(before.copy(), {"vessel": 1000.0}, LABELS, REGIONS)
    assert not (both == 3).any() and (both == 2).sum() == (before == 2).sum()  # other classes untouched


def test_foreground_is_every_class_merged_unless_a_class_takes_the_name() -> None:
    assert structure_members("foreground", LABELS, REGIONS) == [1, 2, 3]
    assert structure_members("foreground", {"background": 0, "foreground": 1, "b": 2}, {}) == [1]
    labels = _volume()
    postprocess_labels(labels, ["foreground"], {}, LABELS, REGIONS)
    assert labels[16, 16, 16] == 0 and labels[18, 0, 0] == 0 and not (labels == 3).any()
    assert (labels[2:10, 2:10, 2:10] == _volume()[2:10, 2:10, 2:10]).all()  # the object keeps its classes
