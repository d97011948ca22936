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
    with caplog.at_level(logging.WARNING, logger="seg_runtime.stages"):
        assert (
            main(
                [str(bundle_factory()), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--dicom-seg"]
            )
            == 0
        )
    assert "not a DICOM series input" in caplog.text
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.nii.gz", "predictions.json", "predictions.jsonl",
                                                                  "predictions.lock"]


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
    with pytest.raises(DicomSegUnavailable, match=r'pip install "seg-runtime\[dicom\]"'):
        require_highdicom()
    (tmp_path / "in").mkdir()
    code = main([str(bundle_factory()), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--dicom-seg"])
    err = capsys.readouterr().err.strip()
    hint = 'pip install "seg-runtime[dicom]"'
    assert code == 2 and err == f"seg-run: error: --dicom-seg needs the highdicom package: {hint}"
    assert not (tmp_path / "o").exists()  # nothing ran


_LIVER = {
    "category": {"code": "123037004", "scheme": "SCT", "meaning": "Anatomical Structure"},
    "type": {"code": "10200004", "meaning": "Liver"},
    "rgb": [221, 130, 101],
}


def test_dicom_seg_carries_the_bundle_label_codes(
    tmp_path: Path, bundle_factory: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    hd = pytest.importorskip("highdicom")
    import json

    import pydicom

    bundle = bundle_factory()
    meta = json.loads((bundle / "model.json").read_text())
    meta["label_codes"] = {"class1": _LIVER}  # class2 has none: generic code, one warning
    (bundle / "model.json").write_text(json.dumps(meta))
    save_dicom_series(tmp_path / "in" / "ct1", _volume(), oblique_affine(), slope=0.1, intercept=0.0)
    save_dicom_series(tmp_path / "in" / "ct2", _volume(), oblique_affine(), slope=0.1, intercept=0.0)
    with caplog.at_level(logging.WARNING, logger="seg_runtime.dicom_seg"):
        code = main([str(bundle), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--dicom-seg"])
    assert code == 0
    assert caplog.text.count("no label_codes for class2") == 1  # once, not once per case
    for case in ("ct1", "ct2"):
        first, second = pydicom.dcmread(tmp_path / "out" / f"{case}.seg.dcm").SegmentSequence
        category = first.SegmentedPropertyCategoryCodeSequence[0]
        kind = first.SegmentedPropertyTypeCodeSequence[0]
        assert (category.CodeValue, category.CodingSchemeDesignator, category.CodeMeaning) == (
            "123037004", "SCT", "Anatomical Structure")
        assert (kind.CodeValue, kind.CodingSchemeDesignator, kind.CodeMeaning) == ("10200004", "SCT", "Liver")
        rgb = hd.color.CIELabColor.from_dicom_value(first.RecommendedDisplayCIELabValue).to_rgb()
        assert np.allclose(rgb, _LIVER["rgb"], atol=1)
        assert second.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tissue"
        assert "RecommendedDisplayCIELabValue" not in second


def test_bad_label_codes_are_a_bundle_error(
    tmp_path: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    bundle = bundle_factory()
    meta = json.loads((bundle / "model.json").read_text())
    meta["label_codes"] = {"class1": {**_LIVER, "rgb": [300, 0, 0]}}
    (bundle / "model.json").write_text(json.dumps(meta))
    (tmp_path / "in").mkdir()
    assert main([str(bundle), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "model.json" in err and "label_codes.class1.rgb" in err and "Traceback" not in err
