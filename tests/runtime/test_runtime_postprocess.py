"""keep_largest: islands of a class or region go to background, the main object keeps its labels."""

from __future__ import annotations

import numpy as np
import pytest

from seg_runtime.postprocess import keep_largest_components, structure_members

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
