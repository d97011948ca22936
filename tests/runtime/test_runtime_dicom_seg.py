"""--dicom-seg: a DICOM-SEG that references the source series and holds the predicted labels."""

from __future__ import annotations

import builtins
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from runtime_helpers import oblique_affine, save_dicom_series, save_nifti

from seg_runtime.cli import main
from seg_runtime.dicom_seg import DicomSegUnavailable, require_highdicom


def _volume() -> np.ndarray:
    """Values spanning the threshold model's three classes (DICOM stores them as int16)."""
    grid = np.meshgrid(*[np.linspace(0, 1, s) for s in (10, 9, 6)], indexing="ij")
    return np.rint(3.0 * (0.6 * grid[0] + 0.4 * grid[2]) * 10) / 10


def test_dicom_seg_matches_the_label_map(tmp_path: Path, bundle_factory: Callable[..., Path]) -> None:
    hd = pytest.importorskip("highdicom")
    series = save_dicom_series(tmp_path / "in" / "ct1", _volume(), oblique_affine(), slope=0.1, intercept=0.0)
    out = tmp_path / "out"
    assert main([str(bundle_factory()), "-i", str(tmp_path / "in"), "-o", str(out), "--dicom-seg"]) == 0
    labels = np.asarray(nib.load(out / "ct1.nii.gz").dataobj)
    assert set(np.unique(labels)) == {0, 1, 2}
    segmentation = hd.seg.segread(out / "ct1.seg.dcm")
    import pydicom

    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(series.iterdir())]
    by_uid = {ds.SOPInstanceUID: ds for ds in sources}
    assert segmentation.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert [s.SegmentLabel for s in segmentation.SegmentSequence] == ["class1", "class2"]
    # Order the source slices as the reader does (along the slice normal).
    normal = np.cross(*np.array(sources[0].ImageOrientationPatient, float).reshape(2, 3))
    ordered = sorted(by_uid, key=lambda uid: float(np.dot(by_uid[uid].ImagePositionPatient, normal)))
    frames = segmentation.get_pixels_by_source_instance(ordered, combine_segments=True)
    np.testing.assert_array_equal(np.transpose(frames, (2, 1, 0)), labels)


def test_dicom_seg_skips_non_dicom_inputs(
    tmp_path: Path, bundle_factory: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("highdicom")
    (tmp_path / "in").mkdir()
    save_nifti(tmp_path / "in" / "a.nii.gz", _volume(), np.eye(4))
    with caplog.at_level(logging.WARNING, logger="seg_runtime.batch"):
        assert (
            main(
                [str(bundle_factory()), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--dicom-seg"]
            )
            == 0
        )
    assert "not a DICOM series input" in caplog.text
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.nii.gz", "predictions.json", "predictions.jsonl"]


def test_missing_highdicom_is_a_clear_error(
    tmp_path: Path,
    bundle_factory: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real_import = builtins.__import__

    def no_highdicom(name: str, *args: object, **kwargs: object) -> object:
        if name.split(".")[0] == "highdicom":
            raise ImportError("No module named 'highdicom'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "highdicom", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_highdicom)
    with pytest.raises(DicomSegUnavailable, match="pip install highdicom"):
        require_highdicom()
    (tmp_path / "in").mkdir()
    code = main([str(bundle_factory()), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--dicom-seg"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("seg-run: error: --dicom-seg needs the highdicom package")
    assert not (tmp_path / "o").exists()  # nothing ran
