"""Post-processing chosen on CV: keep-largest only where it raises the pooled Dice (nnU-Net's rule)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from seg.config import config_from_dict, load_config
from seg.engine.cv_postprocess import choose_postprocessing, write_postprocessing

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
    assert organ["kept"] and organ["dice_after"] > organ["dice_before"]
    assert not lesion["kept"] and lesion["dice_after"] < lesion["dice_before"]  # it really is two blobs
    assert not choice["evidence"]["tumour"]["kept"]  # keeping the largest of organ+lesion drops the lesion
    assert choice["pooled_after"]["organ"] == organ["dice_after"]
    assert choice["pooled_after"]["lesion"] == choice["pooled_before"]["lesion"]

    write_postprocessing(tmp_path, cfg, [0, 1])
    assert json.loads((tmp_path / "postprocessing.json").read_text())["keep_largest"] == ["organ"]
    assert load_config(tmp_path / "config.yaml").infer.keep_largest == ["organ"]
