"""Reading cases (checks and errors) and writing label maps/probabilities with exact geometry."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from runtime_helpers import oblique_affine, save_nifti

from seg_runtime.atomic import TEMP_PREFIX, atomic_path, atomic_write_text
from seg_runtime.cases import Case
from seg_runtime.geometry import CaseError
from seg_runtime.io import read_case, read_image, smallest_int_dtype, write_labels, write_probabilities


def _case(*paths: Path) -> Case:
    return Case("c", list(paths), "file", ".nii.gz")


def test_read_case_4d_nifti_is_channel_first(tmp_path: Path) -> None:
    data = np.random.default_rng(0).normal(size=(4, 5, 6, 2)).astype(np.float32)
    path = save_nifti(tmp_path / "four.nii.gz", data, oblique_affine())
    image, geometry = read_case(_case(path), spatial_dims=3, in_channels=2)
    assert image.shape == (2, 4, 5, 6) and image.dtype == np.float32
    np.testing.assert_array_equal(image[1], data[..., 1])
    assert geometry.shape == (4, 5, 6)


def test_read_case_stacks_channel_files(tmp_path: Path) -> None:
    a = save_nifti(tmp_path / "a.nii.gz", np.zeros((4, 5, 6), np.int16), oblique_affine())
    b = save_nifti(tmp_path / "b.nii.gz", np.ones((4, 5, 6), np.int16), oblique_affine())
    image, _ = read_case(_case(a, b), spatial_dims=3, in_channels=2)
    assert image.shape == (2, 4, 5, 6)
    assert image[0].max() == 0 and image[1].min() == 1


def test_read_case_errors_name_the_file(tmp_path: Path) -> None:
    affine = np.eye(4)
    good = save_nifti(tmp_path / "good.nii.gz", np.zeros((4, 5, 6), np.float32), affine)
    flat = save_nifti(tmp_path / "flat.nii.gz", np.zeros((4, 5), np.float32), affine)
    other_shape = save_nifti(tmp_path / "shape.nii.gz", np.zeros((4, 5, 7), np.float32), affine)
    other_affine = save_nifti(
        tmp_path / "moved.nii.gz", np.zeros((4, 5, 6), np.float32), np.diag([2.0, 1, 1, 1])
    )
    nan = np.zeros((4, 5, 6), np.float32)
    nan[1, 2, 3] = np.nan
    nan_path = save_nifti(tmp_path / "nan.nii.gz", nan, affine)
    with pytest.raises(CaseError, match=r"flat.nii.gz: image is 2D .* model is 3D"):
        read_case(_case(flat), spatial_dims=3, in_channels=1)
    with pytest.raises(CaseError, match=r"good.nii.gz: image is 3D .* model is 2D"):
        read_case(_case(good), spatial_dims=2, in_channels=1)
    with pytest.raises(CaseError, match=r"good.nii.gz\): has 1 channel\(s\) but the model expects 2"):
        read_case(_case(good), spatial_dims=3, in_channels=2)
    with pytest.raises(CaseError, match=r"shape.nii.gz: shape \(4, 5, 7\) differs"):
        read_case(_case(good, other_shape), spatial_dims=3, in_channels=2)
    with pytest.raises(CaseError, match=r"moved.nii.gz: affine differs from that of good.nii.gz"):
        read_case(_case(good, other_affine), spatial_dims=3, in_channels=2)
    with pytest.raises(CaseError, match=r"nan.nii.gz: contains NaN or Inf values \(1 voxels\)"):
        read_case(_case(nan_path), spatial_dims=3, in_channels=1)


def test_corrupt_and_truncated_nifti(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
    good = save_nifti(
        tmp_path / "trunc.nii.gz", np.random.default_rng(0).normal(size=(20, 20, 20)), np.eye(4)
    )
    good.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for path in (corrupt, good, tmp_path / "missing.nii.gz"):
        with pytest.raises(CaseError, match=path.name):
            read_image(path)


def test_single_slice_3d_image_feeds_a_2d_model_and_writes_back(tmp_path: Path) -> None:
    path = save_nifti(tmp_path / "slice.nii.gz", np.arange(20, dtype=np.float32).reshape(4, 5, 1), np.eye(4))
    image, geometry = read_case(_case(path), spatial_dims=2, in_channels=1)
    assert image.shape == (1, 4, 5)
    out = write_labels(tmp_path / "out.nii.gz", np.ones((4, 5), np.int64), geometry)
    assert nib.load(str(out)).shape == (4, 5, 1)


@pytest.mark.parametrize(
    ("low", "high", "dtype"), [(0, 3, np.uint8), (0, 300, np.uint16), (-1, 5, np.int8), (0, 70000, np.int32)]
)
def test_smallest_int_dtype(low: int, high: int, dtype: type) -> None:
    assert smallest_int_dtype(np.array([low, high])) == np.dtype(dtype)


@pytest.mark.parametrize("codes", [(1, 1), (2, 0), (0, 1), (0, 0)])
def test_write_labels_copies_affine_and_codes(tmp_path: Path, codes: tuple[int, int]) -> None:
    sform_code, qform_code = codes
    affine = oblique_affine()
    source = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), affine)
    source.set_sform(affine, code=sform_code)
    source.set_qform(affine, code=qform_code)
    nib.save(source, str(tmp_path / "in.nii.gz"))
    _, geometry = read_image(tmp_path / "in.nii.gz")
    labels = np.random.default_rng(0).integers(0, 3, (4, 5, 6))
    written = nib.load(str(write_labels(tmp_path / "out.nii.gz", labels, geometry)))
    np.testing.assert_allclose(written.affine, geometry.affine, atol=1e-5)
    assert (int(written.header["sform_code"]), int(written.header["qform_code"])) == codes
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(written.dataobj), labels)


def test_write_png_labels_and_npz_probabilities(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((6, 9), np.uint8)).save(tmp_path / "in.png")
    _, geometry = read_image(tmp_path / "in.png")
    labels = np.random.default_rng(0).integers(0, 4, (6, 9))
    write_labels(tmp_path / "out.png", labels, geometry)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")), labels)
    probs = np.random.default_rng(1).random((3, 6, 9)).astype(np.float32)
    write_probabilities(tmp_path / "p.npz", probs, geometry)
    np.testing.assert_allclose(np.load(tmp_path / "p.npz")["probabilities"], probs, atol=1e-3)


def test_write_probabilities_nifti_4d(tmp_path: Path) -> None:
    affine = oblique_affine()
    _, geometry = read_image(save_nifti(tmp_path / "in.nii.gz", np.zeros((4, 5, 6), np.float32), affine))
    probs = np.random.default_rng(1).dirichlet([1, 1, 1], size=(4, 5, 6)).transpose(3, 0, 1, 2)
    image = nib.load(str(write_probabilities(tmp_path / "p.nii.gz", probs, geometry)))
    assert image.shape == (4, 5, 6, 3)
    np.testing.assert_allclose(image.get_fdata(), np.moveaxis(probs, 0, -1), atol=1 / 255)
    np.testing.assert_allclose(image.affine, geometry.affine, atol=1e-5)


def test_atomic_writes_leave_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "a.nii.gz"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        assert tmp.parent == tmp_path and tmp.name.endswith(".nii.gz")
        raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []
    atomic_write_text(tmp_path / "x.json", "{}")
    _, geometry = read_image(save_nifti(tmp_path / "in.nii.gz", np.zeros((2, 2, 2), np.float32), np.eye(4)))
    write_labels(target, np.zeros((2, 2, 2), int), geometry)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "in.nii.gz", "x.json"]
    # Outputs get the usual umask-governed mode, not mkstemp's private 0600.
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
