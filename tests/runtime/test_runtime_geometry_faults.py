"""Issue 26 class 5: degenerate geometry fails per case in one line naming the file; a sheared but valid
affine (gantry tilt) is fine; a DICOM series with a missing slice fails unless --allow-gaps, which
resamples it so every voxel sits where it was acquired."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from runtime_helpers import save_dicom_series, save_nifti

from seg_runtime.cli import main
from seg_runtime.preprocess import PreprocessSpec
from seg_runtime.readers.dicom import read_dicom_series


def _raw_nifti(path: Path, affine: np.ndarray, zooms: tuple[float, ...] | None = None) -> Path:
    """A NIfTI whose header says exactly this affine (nibabel's save would repair some of it)."""
    image = nib.Nifti1Image(np.full((9, 8, 7), 1.5, np.float32), None)
    header = image.header
    header.set_sform(affine, code=1)
    header.set_qform(None, code=0)
    if zooms is not None:
        header["pixdim"][1:4] = zooms
    path.write_bytes(header.binaryblock + b"\0" * (int(header["vox_offset"]) - header.sizeof_hdr)
                     + np.asarray(image.dataobj, np.float32).tobytes(order="F"))
    return path


def _errors(out: Path) -> dict[str, str]:
    return {c["id"]: c["error"] for c in json.loads((out / "predictions.json").read_text())["cases"]
            if c["status"] == "failed"}


def test_degenerate_affines_fail_per_case_naming_the_file(
    tmp_path: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    save_nifti(src / "good.nii.gz", np.full((9, 8, 7), 1.5, np.float32), np.eye(4))
    singular = np.eye(4)
    singular[:3, 1] = singular[:3, 0]  # two axes along one direction
    _raw_nifti(src / "singular.nii", singular)
    zero = np.eye(4)
    zero[2, 2] = 0.0
    _raw_nifti(src / "flat_axis.nii", zero)
    nan = np.eye(4)
    nan[0, 3] = np.nan
    _raw_nifti(src / "nan_affine.nii", nan)
    tilt = np.array([[0.8, 0, 0, 0], [0, 0.8, 0.4, 0], [0, 0, 2.0, 0], [0, 0, 0, 1.0]])  # gantry tilt: sheared
    save_nifti(src / "tilted.nii.gz", np.full((9, 8, 7), 1.5, np.float32), tilt)
    assert main(["predict", str(bundle_factory()), "-i", str(src), "-o", str(tmp_path / "out")]) == 1
    errors = _errors(tmp_path / "out")
    assert set(errors) == {"singular", "flat_axis", "nan_affine"}
    assert "singular.nii: the image's affine is singular" in errors["singular"]
    assert "flat_axis.nii" in errors["flat_axis"] and "zero axis" in errors["flat_axis"]
    assert "nan_affine.nii" in errors["nan_affine"] and "NaN or Inf" in errors["nan_affine"]
    assert (tmp_path / "out" / "tilted.nii.gz").is_file() and "Traceback" not in capsys.readouterr().err


def test_a_spacing_absurd_for_this_model_fails_but_microscopy_at_its_own_scale_runs(
    tmp_path: Path, bundle_factory: Callable[..., Path]
) -> None:
    ct = bundle_factory("ct", preprocess=PreprocessSpec(target_spacing=[1.0, 1.0, 1.0],
                                                        normalization=[{"scheme": "none"}]))
    em = bundle_factory("em", preprocess=PreprocessSpec(target_spacing=[0.004, 0.004, 0.004],
                                                        normalization=[{"scheme": "none"}]))
    src = tmp_path / "in"
    src.mkdir()
    save_nifti(src / "microns.nii.gz", np.full((9, 8, 7), 1.5, np.float32), np.diag([0.001, 0.001, 0.001, 1.0]))
    save_nifti(src / "thick.nii.gz", np.full((9, 8, 7), 1.5, np.float32), np.diag([0.7, 0.7, 5.0, 1.0]))
    assert main(["predict", str(ct), "-i", str(src), "-o", str(tmp_path / "ct")]) == 1
    error = _errors(tmp_path / "ct")["microns"]
    assert "microns.nii.gz: voxel spacing (0.001, 0.001, 0.001) mm is 1e+03x finer than the model's" in error
    assert (tmp_path / "ct" / "thick.nii.gz").is_file()  # anisotropic, but a scan
    (src / "thick.nii.gz").unlink()
    save_nifti(src / "microns.nii.gz", np.full((9, 8, 7), 1.5, np.float32), np.diag([0.004, 0.004, 0.004, 1.0]))
    assert main(["predict", str(em), "-i", str(src), "-o", str(tmp_path / "em")]) == 0


def _ramp_series(folder: Path, missing: int | None = None) -> np.ndarray:
    volume = np.repeat(np.arange(8, dtype=np.float32)[None, None, :] * 10.0, 6, axis=0).repeat(5, axis=1)
    save_dicom_series(folder, volume, np.diag([0.8, 0.9, 2.5, 1.0]), slope=1.0, intercept=0.0)
    if missing is not None:
        import pydicom

        for path in folder.iterdir():
            ds = pydicom.dcmread(path)
            if abs(float(ds.ImagePositionPatient[2]) - 2.5 * missing) < 1e-6:
                path.unlink()
    return volume


def test_a_dicom_series_with_a_missing_slice_fails_unless_allowed(
    tmp_path: Path, bundle_factory: Callable[..., Path]
) -> None:
    _ramp_series(tmp_path / "in" / "series", missing=3)
    assert main(["predict", str(bundle_factory()), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 1
    error = _errors(tmp_path / "out")["series"]
    assert "series: DICOM slices are unevenly spaced (2.5 to 5 mm apart" in error and "--allow-gaps" in error
    assert main(["predict", str(bundle_factory()), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out2"),
                 "--allow-gaps"]) == 0
    written = nib.load(str(tmp_path / "out2" / "series.nii.gz"))
    assert written.shape == (6, 5, 8) and np.isclose(abs(written.affine[2, 2]), 2.5)


def test_allow_gaps_puts_every_voxel_where_it_was_acquired(tmp_path: Path) -> None:
    volume = _ramp_series(tmp_path / "series", missing=3)
    resampled, geometry = read_dicom_series(tmp_path / "series", allow_gaps=True)
    assert resampled.shape == volume.shape and np.isclose(geometry.spacing[2], 2.5)
    np.testing.assert_allclose(resampled[0, 0], volume[0, 0], atol=1e-4)  # the gap filled linearly: 30 = (20+40)/2
    even, _ = read_dicom_series(_ramp_series_even(tmp_path / "even"))
    np.testing.assert_allclose(even, volume, atol=1e-4)


def _ramp_series_even(folder: Path) -> Path:
    _ramp_series(folder)
    return folder
