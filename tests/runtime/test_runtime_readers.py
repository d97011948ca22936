"""Format readers: NRRD, MetaImage and DICOM recover the same array and RAS affine as NIfTI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import oblique_affine, save_dicom_series, save_metaimage, save_nifti, save_nrrd

from seg_runtime.geometry import CaseError
from seg_runtime.io import read_image


@pytest.fixture
def volume() -> np.ndarray:
    """An asymmetric int16 volume whose values encode their index (flips/transposes show)."""
    i, j, k = np.meshgrid(np.arange(4), np.arange(5), np.arange(3), indexing="ij")
    return (100 * k + 10 * j + i).astype(np.int16)


def _assert_same(path: Path, volume: np.ndarray, affine: np.ndarray, fmt: str) -> None:
    data, geometry = read_image(path)
    assert geometry.source_format == fmt
    assert data.shape == volume.shape
    np.testing.assert_array_equal(data, volume)
    np.testing.assert_allclose(geometry.affine, affine, atol=1e-5)
    np.testing.assert_allclose(geometry.spacing, np.linalg.norm(affine[:3, :3], axis=0), atol=1e-6)
    assert geometry.shape == volume.shape


@pytest.mark.parametrize("encoding", ["raw", "gzip"])
def test_nrrd_matches_nifti(tmp_path: Path, volume: np.ndarray, encoding: str) -> None:
    affine = oblique_affine()
    nifti, nifti_geometry = read_image(save_nifti(tmp_path / "ref.nii.gz", volume, affine))
    _assert_same(
        save_nrrd(tmp_path / "a.nrrd", volume, affine, encoding=encoding),
        nifti,
        nifti_geometry.affine,
        "nrrd",
    )


def test_nrrd_voxel_zero_is_lps_origin_negated(tmp_path: Path, volume: np.ndarray) -> None:
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    affine[:3, 3] = [5.0, 6.0, 7.0]
    _, geometry = read_image(save_nrrd(tmp_path / "lps.nrrd", volume, affine))
    # LPS origin (-5, -6, 7) written by hand in the header, read back as RAS (5, 6, 7).
    assert "(-5.0,-6.0,7.0)" in (tmp_path / "lps.nrrd").read_bytes()[:600].decode("latin-1")
    np.testing.assert_allclose(geometry.affine, affine)


def test_detached_nhdr(tmp_path: Path, volume: np.ndarray) -> None:
    affine = oblique_affine()
    save_nrrd(tmp_path / "x.nrrd", volume, affine)
    header, payload = (tmp_path / "x.nrrd").read_bytes().split(b"\n\n", 1)
    (tmp_path / "x.raw").write_bytes(payload)
    (tmp_path / "x.nhdr").write_bytes(header + b"\ndata file: x.raw\n\n")
    _assert_same(tmp_path / "x.nhdr", volume, affine, "nrrd")


@pytest.mark.parametrize(("name", "compressed"), [("a.mha", False), ("b.mha", True), ("c.mhd", False)])
def test_metaimage_matches_nifti(tmp_path: Path, volume: np.ndarray, name: str, compressed: bool) -> None:
    affine = oblique_affine()
    _, nifti_geometry = read_image(save_nifti(tmp_path / "ref.nii.gz", volume, affine))
    path = save_metaimage(tmp_path / name, volume, affine, compressed=compressed)
    _assert_same(path, volume, nifti_geometry.affine, "mha")


def test_dicom_series_matches_nifti(tmp_path: Path, volume: np.ndarray) -> None:
    affine = oblique_affine()
    values = volume.astype(np.float32) * 2.0 - 100.0  # what the rescale tags produce
    save_dicom_series(tmp_path / "series", values, affine)
    _, nifti_geometry = read_image(save_nifti(tmp_path / "ref.nii.gz", values, affine))
    _assert_same(tmp_path / "series", values, nifti_geometry.affine, "dicom")


def test_dicom_empty_and_mixed_series(tmp_path: Path, volume: np.ndarray) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaseError, match="empty DICOM folder"):
        read_image(tmp_path / "empty")
    values = volume.astype(np.float32)
    save_dicom_series(tmp_path / "mixed", values, oblique_affine(), series_uid="1.2.3.1")
    save_dicom_series(tmp_path / "mixed", values, oblique_affine(), series_uid="1.2.3.2", name_offset=100)
    with pytest.raises(CaseError, match=r"mixed.*mixed DICOM series \(2 SeriesInstanceUIDs"):
        read_image(tmp_path / "mixed")


@pytest.mark.parametrize("mode", ["L", "I;16", "RGB", "RGBA"])
def test_png_and_tiff(tmp_path: Path, mode: str) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    if mode in {"RGB", "RGBA"}:
        pixels = rng.integers(0, 255, (6, 9, len(mode)), dtype=np.uint8)
    else:
        pixels = rng.integers(0, 255 if mode == "L" else 60000, (6, 9)).astype(
            np.uint8 if mode == "L" else np.uint16
        )
    for suffix in (".png", ".tif"):
        path = tmp_path / f"img{suffix}"
        Image.fromarray(pixels).save(path)
        data, geometry = read_image(path)
        np.testing.assert_array_equal(data, pixels[..., :3] if mode == "RGBA" else pixels)
        assert geometry.shape == (6, 9)
        np.testing.assert_array_equal(geometry.affine, np.eye(4))


def test_nrrd_and_metaimage_truncated(tmp_path: Path, volume: np.ndarray) -> None:
    affine = oblique_affine()
    for path in (
        save_nrrd(tmp_path / "t.nrrd", volume, affine),
        save_metaimage(tmp_path / "t.mha", volume, affine),
    ):
        path.write_bytes(path.read_bytes()[:-7])
        with pytest.raises(CaseError, match=rf"{path.name}: truncated"):
            read_image(path)
    gz = save_nrrd(tmp_path / "g.nrrd", volume, affine, encoding="gzip")
    gz.write_bytes(gz.read_bytes()[:-20])
    with pytest.raises(CaseError, match="g.nrrd: corrupt or truncated gzip"):
        read_image(gz)


def test_not_a_nrrd(tmp_path: Path) -> None:
    path = tmp_path / "junk.nrrd"
    path.write_bytes(b"hello world\n")
    with pytest.raises(CaseError, match="junk.nrrd: not a NRRD file"):
        read_image(path)


def test_nrrd_vector_axis_becomes_channels_last(tmp_path: Path) -> None:
    data = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)  # components first, as stored
    header = (
        "NRRD0004\ntype: float\ndimension: 4\nspace: RAS\nsizes: 2 4 5 3\n"
        "space directions: none (2,0,0) (0,1,0) (0,0,3)\nkinds: vector domain domain domain\n"
        "endian: little\nencoding: raw\nspace origin: (1,2,3)\n\n"
    )
    (tmp_path / "v.nrrd").write_bytes(header.encode() + data.tobytes(order="F"))
    array, geometry = read_image(tmp_path / "v.nrrd")
    assert array.shape == (4, 5, 3, 2) and geometry.shape == (4, 5, 3)
    np.testing.assert_array_equal(array, np.moveaxis(data, 0, -1))
    np.testing.assert_allclose(geometry.affine, [[2, 0, 0, 1], [0, 1, 0, 2], [0, 0, 3, 3], [0, 0, 0, 1]])


def test_metaimage_multichannel(tmp_path: Path) -> None:
    data = np.arange(4 * 5 * 3 * 2, dtype=np.int16).reshape(4, 5, 3, 2)
    header = (
        "ObjectType = Image\nNDims = 3\nDimSize = 4 5 3\nElementNumberOfChannels = 2\n"
        "ElementSpacing = 1 1 1\nElementType = MET_SHORT\nElementDataFile = LOCAL\n"
    )
    # Channels interleave per voxel: the fastest-varying axis on disk.
    (tmp_path / "m.mha").write_bytes(header.encode() + np.moveaxis(data, -1, 0).tobytes(order="F"))
    array, geometry = read_image(tmp_path / "m.mha")
    np.testing.assert_array_equal(array, data)
    np.testing.assert_allclose(geometry.affine, np.diag([-1.0, -1.0, 1.0, 1.0]))  # LPS identity → RAS
