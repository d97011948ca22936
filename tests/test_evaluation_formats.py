"""Issue 14 structure item: ``seg evaluate`` finds every format ``seg-run`` reads (one suffix table)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seg.evaluation import evaluate_folders, label_files
from seg_runtime.formats import IMAGE_SUFFIXES
from seg_runtime.geometry import make_geometry
from seg_runtime.io import write_labels


def test_evaluate_finds_mhd_nhdr_and_upper_case_files(tmp_path: Path) -> None:
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    labels = np.zeros((6, 5, 4), np.uint8)
    labels[1:4, 1:3, 1:3] = 1
    geometry = make_geometry(np.diag([0.8, 0.9, 1.5, 1.0]), labels.shape, "nifti")
    for folder in (pred, ref):
        write_labels(folder / "a.mha", labels, geometry)
        write_labels(folder / "b.nrrd", labels, geometry)
        write_labels(folder / "c.nii.gz", labels, geometry)
        # .mhd: a detached-style header name for the same MetaImage bytes; upper-case NRRD suffix.
        (folder / "a.mha").rename(folder / "a.mhd")
        (folder / "b.nrrd").rename(folder / "b.NRRD")
    (pred / "predictions.json").write_text("{}")
    assert sorted(label_files(pred)) == ["a", "b", "c"]
    result = evaluate_folders(pred, ref, {"background": 0, "fg": 1}, surface=False)
    assert [row["id"] for row in result["cases"]] == ["a", "b", "c"] and not result["missing"]
    assert all(row["dice_fg"] == 1.0 for row in result["cases"])
    assert {".mhd", ".nhdr", ".nrrd", ".mha"} <= set(IMAGE_SUFFIXES)
