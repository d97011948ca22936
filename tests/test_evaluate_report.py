"""Issue 29: ``seg evaluate`` names the labels, states its units, counts voxels, measures volumes and
summarises each structure over the cases (mean, std, median) — checked against hand-computed values."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from seg.cli import main
from seg.evaluation import evaluate_folders, is_score

SPACING = (2.0, 1.0, 1.0)  # mm: one voxel is 2 mm^3, a shift along x is 2 mm


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr.astype(np.uint8), np.diag([*SPACING, 1.0])), str(path))


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """nnU-Net-like folder: dataset.json names 'core' (1), 'edema' (2) and the region 'whole' [1, 2].

    Reference: core a 4^3 cube (64 voxels, 0.128 ml), edema a 2x4x4 slab beside it (32 voxels).
    Predictions: a — core shifted one voxel along x (TP 48, FP 16, FN 16; Dice 0.75; HD95 2 mm);
    b — exact; c — nothing (core: TP 0, FP 0, FN 64; Dice 0; HD95 undefined).
    """
    ref = np.zeros((12, 10, 10), np.uint8)
    ref[2:6, 2:6, 2:6] = 1
    ref[6:8, 2:6, 2:6] = 2
    shifted = np.zeros_like(ref)
    shifted[3:7, 2:6, 2:6] = 1
    shifted[7:9, 2:6, 2:6] = 2
    for cid, pred in (("a", shifted), ("b", ref), ("c", np.zeros_like(ref))):
        _save(tmp_path / "labelsTs" / f"{cid}.nii.gz", ref)
        _save(tmp_path / "pred" / f"{cid}.nii.gz", pred)
    labels = {"background": 0, "core": 1, "edema": 2, "whole": [1, 2]}
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels, "file_ending": ".nii.gz"}))
    return tmp_path


def test_evaluate_names_labels_from_dataset_json_and_counts_by_hand(dataset: Path, capsys) -> None:
    out = dataset / "eval"
    assert main(["evaluate", "--pred", str(dataset / "pred"), "--ref", str(dataset / "labelsTs"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "evaluation.json").read_text())
    assert result["structures"] == ["core", "edema", "whole"] and result["regions"] == {"whole": [1, 2]}
    assert result["label_source"] == str(dataset / "dataset.json") and "class_1" not in printed
    a, b, c = result["cases"]
    assert (a["tp_core"], a["fp_core"], a["fn_core"]) == (48, 16, 16) and a["dice_core"] == pytest.approx(0.75)
    assert a["hd95_core"] == pytest.approx(2.0)  # one voxel along x at 2 mm: mm, not voxels
    assert a["ref_ml_core"] == pytest.approx(64 * 2 / 1000) and a["pred_ml_edema"] == pytest.approx(32 * 2 / 1000)
    assert (a["tp_whole"], a["fp_whole"], a["fn_whole"]) == (80, 16, 16)  # the union shifts as one block
    assert (c["tp_core"], c["fp_core"], c["fn_core"]) == (0, 0, 64) and c["pred_ml_core"] == 0.0
    assert c["dice_core"] == 0.0 and np.isnan(c["hd95_core"]) and b["dice_core"] == 1.0
    # Over the cases: Dice 0.75, 1, 0; HD95 2, 0 and NaN (left out, counted out).
    assert result["mean"]["dice_core"] == pytest.approx(7 / 12) and result["median"]["dice_core"] == 0.75
    assert result["std"]["dice_core"] == pytest.approx(0.5204165, abs=1e-6)  # sample std
    assert result["mean"]["hd95_core"] == pytest.approx(1.0) and result["count"]["hd95_core"] == 2
    assert result["units"]["hd95"] == "mm" and result["units"]["ref_ml"] == "ml"
    # The CSV holds the JSON's numbers: one row per case, then mean, std and median.
    with open(out / "evaluation.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == ["a", "b", "c", "mean", "std", "median"]
    assert list(rows[0]) == ["id", *result["mean"]] and int(rows[0]["fp_core"]) == 16
    assert float(rows[4]["dice_core"]) == pytest.approx(result["std"]["dice_core"])
    # Printed: the names, the units in the headers, the statistics; within 100 columns.
    words = " ".join(printed.split())
    assert f"labels: core=1, edema=2; regions: whole=1+2 (from {dataset / 'dataset.json'})" in words
    assert "HD95 mm" in printed and "ref ml" in printed and "median" in printed
    assert max(len(line) for line in printed.splitlines() if not line.startswith("written")) <= 100
    summary = next(line.split() for line in printed.splitlines() if line.startswith("core ") and "Dice" in line)
    assert summary == ["core", "Dice", "0.5833", "0.5204", "0.7500", "3"]


def test_only_the_scores_are_scores(dataset: Path) -> None:
    """The CV pools ``is_score`` keys: counts and volumes describe cases, not models."""
    result = evaluate_folders(dataset / "pred", dataset / "labelsTs", {"background": 0, "core": 1}, surface=False)
    assert [k for k in result["mean"] if is_score(k)] == ["dice_core"]
    assert {"tp_core", "fp_core", "fn_core", "ref_ml_core", "pred_ml_core"} <= set(result["mean"])


def test_2d_label_maps_report_areas_in_mm2(tmp_path: Path) -> None:
    labels = np.zeros((8, 8), np.uint8)
    labels[2:5, 2:6] = 1
    for folder in ("ref", "pred"):
        (tmp_path / folder).mkdir()
        Image.fromarray(labels).save(tmp_path / folder / "s.png")
    result = evaluate_folders(tmp_path / "pred", tmp_path / "ref", {"background": 0, "cell": 1}, surface=False)
    assert result["cases"][0]["ref_mm2_cell"] == 12.0 and "ref_ml_cell" not in result["cases"][0]
