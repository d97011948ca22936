"""Post-processing chosen on CV: keep-largest only where it raises the pooled Dice (nnU-Net's rule)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from seg.config import config_from_dict, load_config
from seg.workflows.postprocessing import choose_postprocessing, write_postprocessing

LABELS = {"background": 0, "organ": 1, "lesion": 2}


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), np.eye(4)), path)


def _write_fold(parent: Path, fold: int, seed: int) -> None:
    """The organ is one object but predicted with a stray island; the lesion really is two blobs."""
    rng = np.random.default_rng(seed)
    ref = np.zeros((20, 20, 20), dtype=np.uint8)
    ref[2:10, 2:10, 2:10] = 1
    ref[13:16, 13:16, 2:5] = 2
    ref[13:16, 2:5, 13:16] = 2
    pred = ref.copy()
    x = int(rng.integers(12, 16))
    pred[x : x + 3, 14:17, 14:17] = 1  # the organ's stray island: costs Dice, keep-largest removes it
    _save(parent / f"fold_{fold}" / "validation" / f"case{fold}.nii.gz", pred)
    _save(parent / f"fold_{fold}" / "validation_ref" / f"case{fold}.nii.gz", ref)


def test_keep_largest_is_kept_only_where_it_raises_the_pooled_dice(tmp_path: Path) -> None:
    cfg = config_from_dict({"name": "cv", "data": {"labels": LABELS, "regions": {"tumour": [1, 2]},
                                                   "split": {"folds": 2}}})
    for fold in (0, 1):
        _write_fold(tmp_path, fold, seed=fold)
    choice = choose_postprocessing(tmp_path, cfg, [0, 1])
    assert choice["cases"] == 2 and choice["keep_largest"] == ["organ"]
    organ, lesion = choice["evidence"]["organ"], choice["evidence"]["lesion"]
    assert organ["chosen"] == "keep_largest" and organ["keep_largest"] > organ["dice_before"]
    assert lesion["chosen"] is None and lesion["keep_largest"] < lesion["dice_before"]  # it really is two blobs
    assert "keep_largest" in lesion["lowers"] or lesion["keep_largest"] < lesion["dice_before"]
    assert choice["evidence"]["tumour"]["chosen"] is None  # keeping the largest of organ+lesion drops the lesion
    assert choice["evidence"]["foreground"]["chosen"] is None  # so does keeping the largest of everything
    assert choice["remove_small"] == {}  # the organ's island (27 voxels) is no smaller than a real lesion blob
    assert choice["pooled_after"]["organ"] == organ["keep_largest"]
    assert choice["pooled_after"]["lesion"] == choice["pooled_before"]["lesion"]

    write_postprocessing(tmp_path, cfg, [0, 1])
    assert json.loads((tmp_path / "postprocessing.json").read_text())["keep_largest"] == ["organ"]
    assert load_config(tmp_path / "config.yaml").infer.keep_largest == ["organ"]


def test_remove_small_wins_where_a_structure_really_has_several_pieces(tmp_path: Path) -> None:
    """Lesions in two real blobs plus one-voxel specks: keep-largest would drop a real blob, so only the
    remove-small step raises the pooled Dice, at a volume below the smallest real blob. The spacing is
    2 mm, so volumes are in mm³ (8 per voxel): the lesion is 27 + 64 voxels = 728 mm³ per case."""
    cfg = config_from_dict({"name": "cv", "data": {"labels": LABELS, "split": {"folds": 2}}})
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    for fold in (0, 1):
        ref = np.zeros((20, 20, 20), dtype=np.uint8)
        ref[2:10, 2:10, 2:10] = 1
        ref[13:16, 13:16, 2:5] = 2  # 27 voxels = 216 mm³: the smallest real lesion
        ref[13:17, 2:6, 13:17] = 2
        pred = ref.copy()
        pred[18, 18, 18 - fold] = 2  # specks
        pred[1, 18, 18] = 2
        for kind, array in (("validation", pred), ("validation_ref", ref)):
            path = tmp_path / f"fold_{fold}" / kind / f"case{fold}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(array, affine), path)
    choice = choose_postprocessing(tmp_path, cfg, [0, 1])
    lesion = choice["evidence"]["lesion"]
    # The merged foreground (organ + lesion) comes first and has the same specks: its remove-small
    # cleans them, so the lesion needs nothing on top.
    assert choice["keep_largest"] == [] and set(choice["remove_small"]) == {"foreground"}
    assert 8 < choice["remove_small"]["foreground"] < 216  # above a speck, below the smallest real blob
    assert lesion["dice_before"] == 1.0 and lesion["chosen"] is None
    assert choice["evidence"]["foreground"]["keep_largest"] < choice["evidence"]["foreground"]["dice_before"]
    assert sorted(float(v) for v in lesion["remove_small"]) == pytest.approx([0.728, 3.64, 7.28, 36.4])
    assert choice["pooled_after"]["lesion"] == 1.0 > choice["pooled_before"]["lesion"]


def test_foreground_keep_largest_keeps_an_object_whose_classes_come_in_pieces(tmp_path: Path) -> None:
    """One object whose class 1 comes in two pieces, each touching class 2, plus a stray island far away:
    keep-largest of class 1 would drop a real piece; keep-largest of the merged foreground is exact."""
    cfg = config_from_dict({"name": "cv", "data": {"labels": LABELS, "split": {"folds": 2}}})
    for fold in (0, 1):
        ref = np.zeros((24, 24, 24), dtype=np.uint8)
        ref[4:12, 4:12, 4:12] = 2
        ref[4:12, 4:12, 2:4] = 1  # class 1 on two opposite faces of the class-2 block
        ref[4:12, 4:12, 12:14] = 1
        pred = ref.copy()
        pred[19:22, 19:22, 19 - fold : 22 - fold] = 1  # stray island
        _save(tmp_path / f"fold_{fold}" / "validation" / f"case{fold}.nii.gz", pred)
        _save(tmp_path / f"fold_{fold}" / "validation_ref" / f"case{fold}.nii.gz", ref)
    choice = choose_postprocessing(tmp_path, cfg, [0, 1])
    organ = choice["evidence"]["organ"]
    assert organ["keep_largest"] < organ["dice_before"]
    assert choice["keep_largest"] == ["foreground"]
    assert choice["pooled_after"]["organ"] == 1.0 and choice["pooled_after"]["lesion"] == 1.0
