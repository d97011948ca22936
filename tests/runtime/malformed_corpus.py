"""A generated corpus of malformed inputs, built from tiny volumes in the test's folder (issue 26).

Each entry is something a user can really have in a scan folder: truncated and corrupt files of every
format, headers that lie, non-finite values, degenerate geometry, absurd spacings, broken DICOM series,
channel files that do not fit the model, links that loop or dangle. :func:`write_corpus` writes them
all beside a few good cases and returns, per bad case id, a phrase its one-line error must contain
(the error must also name the file or folder).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from runtime_helpers import save_dicom_series, save_metaimage, save_nifti, save_nrrd

GOOD = np.full((9, 8, 7), 1.5, np.float32)
AFFINE = np.diag([1.0, 1.1, 1.3, 1.0])


def write_good(folder: Path) -> list[str]:
    """The good cases (NIfTI, NRRD, MetaImage, a DICOM series): the ids of their outputs."""  # + "dup" in the corpus
    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 3, GOOD.size, dtype=np.float32).reshape(GOOD.shape)
    save_nifti(folder / "good_nifti.nii.gz", ramp, AFFINE)
    save_nifti(folder / "good_small.nii.gz", np.full((3, 2, 2), 2.5, np.float32), AFFINE)
    save_nrrd(folder / "good_nrrd.nrrd", (ramp * 10).astype(np.int16), AFFINE)
    save_metaimage(folder / "good_mha.mha", ramp, AFFINE)
    save_dicom_series(folder / "good_dicom", ramp * 100, np.diag([0.9, 0.8, 2.0, 1.0]), slope=1.0, intercept=0.0)
    return ["good_nifti", "good_small", "good_nrrd", "good_mha", "good_dicom"]


def _nifti_bytes(data: np.ndarray, affine: np.ndarray = AFFINE, **header: object) -> bytes:
    image = nib.Nifti1Image(data, affine)
    for key, value in header.items():
        image.header[key] = value
    return image.header.binaryblock + b"\0" * 4 + np.asarray(data).tobytes(order="F")


def _raw_nifti(path: Path, data: np.ndarray, affine: np.ndarray, zooms: tuple[float, ...] | None = None) -> None:
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    header.set_data_shape(data.shape)
    header.set_sform(affine, code=1)
    header.set_qform(None, code=0)
    if zooms is not None:
        header["pixdim"][1:4] = zooms
    header["vox_offset"] = 352
    path.write_bytes(header.binaryblock + b"\0" * 4 + data.tobytes(order="F"))


def _nifti_cases(folder: Path) -> dict[str, str]:
    good = gzip.compress(_nifti_bytes(GOOD))
    (folder / "nii_truncated.nii.gz").write_bytes(good[: len(good) // 2])
    (folder / "nii_corrupt_gzip.nii.gz").write_bytes(b"\x1f\x8b" + os.urandom(300))
    (folder / "nii_empty.nii.gz").write_bytes(b"")
    (folder / "nii_empty_raw.nii").write_bytes(b"")
    (folder / "nii_text.nii.gz").write_text("this is not an image\n")
    (folder / "nii_random.nii").write_bytes(np.random.default_rng(0).bytes(2000))
    lying = nib.Nifti1Header()
    lying.set_data_dtype(np.float32)
    lying.set_data_shape((4000, 4000, 4000))
    lying["vox_offset"] = 352
    (folder / "nii_lying_header.nii").write_bytes(lying.binaryblock + b"\0" * 4 + b"\0" * 32)
    (folder / "nii_short_payload.nii").write_bytes(_nifti_bytes(GOOD)[:-500])
    nan, inf = GOOD.copy(), GOOD.copy()
    nan[1, 2, 3], inf[0, 0, 0] = np.nan, np.inf
    save_nifti(folder / "nii_nan.nii.gz", nan, AFFINE)
    save_nifti(folder / "nii_inf.nii.gz", inf, AFFINE)
    save_nifti(folder / "nii_2d.nii.gz", GOOD[:, :, 0], AFFINE)
    save_nifti(folder / "nii_5d.nii.gz", np.zeros((4, 4, 4, 2, 2), np.float32), AFFINE)
    save_nifti(folder / "nii_two_channels.nii.gz", np.stack([GOOD, GOOD], axis=-1), AFFINE)
    singular, zero, nan_affine = AFFINE.copy(), AFFINE.copy(), AFFINE.copy()
    singular[:3, 1] = singular[:3, 0]
    zero[2, 2] = 0.0
    nan_affine[1, 3] = np.nan
    _raw_nifti(folder / "nii_singular.nii", GOOD, singular)
    _raw_nifti(folder / "nii_zero_axis.nii", GOOD, zero)
    _raw_nifti(folder / "nii_nan_affine.nii", GOOD, nan_affine)
    save_nifti(folder / "nii_microns.nii.gz", GOOD, np.diag([1e-4, 1e-4, 1e-4, 1.0]))
    save_nifti(folder / "nii_kilometres.nii.gz", GOOD, np.diag([900.0, 900.0, 900.0, 1.0]))
    save_nifti(folder / "nii_complex.nii.gz", GOOD.astype(np.complex64), AFFINE)
    bad_magic = bytearray(_nifti_bytes(GOOD))
    bad_magic[344:348] = b"xyz\0"
    (folder / "nii_bad_magic.nii").write_bytes(bytes(bad_magic))
    save_nifti(folder / "nii_half_nan.nii.gz", np.where(np.arange(GOOD.size).reshape(GOOD.shape) % 2, np.nan,
                                                          GOOD).astype(np.float32), AFFINE)
    save_nifti(folder / "nii_empty_axis.nii.gz", np.zeros((0, 8, 7), np.float32), AFFINE)
    return {"nii_truncated": "cannot read NIfTI", "nii_corrupt_gzip": "cannot read NIfTI", "nii_empty": "",
            "nii_empty_raw": "", "nii_text": "cannot read NIfTI", "nii_random": "",
            "nii_lying_header": "header claims", "nii_short_payload": "", "nii_nan": "NaN or Inf",
            "nii_inf": "NaN or Inf", "nii_2d": "image is 2D", "nii_5d": "unsupported NIfTI shape",
            "nii_two_channels": "2 channel(s)", "nii_singular": "affine is singular",
            "nii_zero_axis": "zero axis", "nii_nan_affine": "NaN or Inf", "nii_microns": "finer than the model's",
            "nii_kilometres": "coarser than the model's", "nii_complex": "", "nii_bad_magic": "",
            "nii_half_nan": "NaN or Inf",
            "nii_empty_axis": ""}


def _nrrd_header(*lines: str) -> bytes:
    return ("\n".join(["NRRD0004", *lines]) + "\n\n").encode()


def _nrrd_cases(folder: Path) -> dict[str, str]:
    save_nrrd(folder / "nrrd_truncated.nrrd", (GOOD * 10).astype(np.int16), AFFINE)
    data = (folder / "nrrd_truncated.nrrd").read_bytes()
    (folder / "nrrd_truncated.nrrd").write_bytes(data[:-200])
    base = ["type: short", "dimension: 3", "space: left-posterior-superior", "sizes: 9 8 7",
            "space directions: (1,0,0) (0,1,0) (0,0,1)", "endian: little"]
    payload = (GOOD * 10).astype("<i2").tobytes(order="F")
    (folder / "nrrd_bad_encoding.nrrd").write_bytes(_nrrd_header(*base, "encoding: bzip2") + payload)
    (folder / "nrrd_no_sizes.nrrd").write_bytes(_nrrd_header(*[b for b in base if not b.startswith("sizes")],
                                                             "encoding: raw") + payload)
    (folder / "nrrd_text_sizes.nrrd").write_bytes(_nrrd_header(*base[:3], "sizes: nine 8 7", *base[4:],
                                                               "encoding: raw") + payload)
    (folder / "nrrd_detached_missing.nhdr").write_bytes(_nrrd_header(*base, "encoding: raw", "data file: gone.raw"))
    (folder.parent / "secret.raw").write_bytes(payload)
    (folder / "nrrd_detached_outside.nhdr").write_bytes(_nrrd_header(*base, "encoding: raw",
                                                                     "data file: ../secret.raw"))
    (folder / "nrrd_gzip_corrupt.nrrd").write_bytes(_nrrd_header(*base, "encoding: gzip") + b"\x1f\x8b" + b"x" * 200)
    (folder / "nrrd_huge.nrrd").write_bytes(_nrrd_header(*base[:3], "sizes: 5000 5000 5000", *base[4:],
                                                         "encoding: raw") + payload)
    (folder / "nrrd_bad_type.nrrd").write_bytes(_nrrd_header("type: quaternion", *base[1:], "encoding: raw") + payload)
    (folder / "nrrd_not_nrrd.nrrd").write_bytes(b"PNG? no." * 40)
    return {"nrrd_truncated": "", "nrrd_bad_encoding": "encoding", "nrrd_no_sizes": "sizes",
            "nrrd_text_sizes": "", "nrrd_detached_missing": "gone.raw", "nrrd_detached_outside": "not in the header's folder",
            "nrrd_gzip_corrupt": "", "nrrd_huge": "", "nrrd_bad_type": "", "nrrd_not_nrrd": ""}


def _mha_cases(folder: Path) -> dict[str, str]:
    save_metaimage(folder / "mha_truncated.mha", GOOD, AFFINE)
    data = (folder / "mha_truncated.mha").read_bytes()
    (folder / "mha_truncated.mha").write_bytes(data[:-100])
    lines = ["ObjectType = Image", "NDims = 3", "BinaryData = True", "BinaryDataByteOrderMSB = False",
             "ElementSpacing = 1 1 1", "DimSize = 9 8 7", "ElementType = MET_FLOAT"]
    payload = GOOD.astype("<f4").tobytes(order="F")

    def mha(name: str, *rows: str, body: bytes = payload) -> None:
        (folder / name).write_bytes(("\n".join(rows) + "\n").encode() + body)

    mha("mha_no_dimsize.mha", *[r for r in lines if not r.startswith("DimSize")], "ElementDataFile = LOCAL")
    mha("mha_missing_data_file.mhd", *lines, "ElementDataFile = nowhere.raw", body=b"")
    mha("mha_list.mhd", *lines, "ElementDataFile = LIST", body=b"")
    mha("mha_bad_zlib.mha", *lines, "CompressedData = True", "ElementDataFile = LOCAL", body=b"not zlib" * 30)
    mha("mha_bad_type.mha", *[r.replace("MET_FLOAT", "MET_OPAQUE") for r in lines], "ElementDataFile = LOCAL")
    mha("mha_huge.mha", *[r.replace("9 8 7", "6000 6000 6000") for r in lines], "CompressedData = True",
        "ElementDataFile = LOCAL", body=zlib.compress(payload))
    inf = GOOD.copy()
    inf[2, 2, 2] = -np.inf
    save_metaimage(folder / "mha_inf.mha", inf, AFFINE)
    return {"mha_truncated": "", "mha_no_dimsize": "", "mha_missing_data_file": "nowhere.raw", "mha_list": "",
            "mha_bad_zlib": "", "mha_bad_type": "", "mha_huge": "", "mha_inf": "NaN or Inf"}


def _dicom_cases(folder: Path) -> dict[str, str]:
    import pydicom

    (folder / "dicom_empty").mkdir()
    (folder / "dicom_not_dicom").mkdir()
    (folder / "dicom_not_dicom" / "notes.txt").write_text("no images here")
    ramp = np.linspace(0, 300, GOOD.size, dtype=np.float32).reshape(GOOD.shape)
    series = np.diag([0.9, 0.8, 2.0, 1.0])
    save_dicom_series(folder / "dicom_mixed", ramp, series, series_uid="1.2.826.1")
    save_dicom_series(folder / "dicom_mixed", ramp, series, series_uid="1.2.826.2", name_offset=50)
    for name in ("dicom_no_position", "dicom_gap", "dicom_corrupt_slice", "dicom_orientations",
                 "dicom_duplicate", "dicom_sizes"):
        save_dicom_series(folder / name, ramp, series, slope=1.0, intercept=0.0)
    files = {name: sorted((folder / name).iterdir()) for name in ("dicom_no_position", "dicom_gap",
             "dicom_corrupt_slice", "dicom_orientations", "dicom_duplicate", "dicom_sizes")}
    ds = pydicom.dcmread(files["dicom_no_position"][0])
    del ds.ImagePositionPatient
    ds.save_as(files["dicom_no_position"][0])
    middle = sorted(files["dicom_gap"], key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))[3]
    middle.unlink()
    files["dicom_corrupt_slice"][2].write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    ds = pydicom.dcmread(files["dicom_orientations"][1])
    ds.ImageOrientationPatient = [0, 1, 0, 1, 0, 0]
    ds.save_as(files["dicom_orientations"][1])
    first = pydicom.dcmread(files["dicom_duplicate"][0])
    second = pydicom.dcmread(files["dicom_duplicate"][1])
    second.ImagePositionPatient = first.ImagePositionPatient
    second.save_as(files["dicom_duplicate"][1])
    ds = pydicom.dcmread(files["dicom_sizes"][0])
    ds.Rows, ds.PixelData = 4, np.zeros((4, ds.Columns), np.int16).tobytes()
    ds.save_as(files["dicom_sizes"][0])
    return {"dicom_empty": "empty folder", "dicom_not_dicom": "holds no DICOM files", "dicom_mixed": "mixed DICOM series",
            "dicom_no_position": "ImagePositionPatient", "dicom_gap": "unevenly spaced",
            "dicom_corrupt_slice": "DICOM", "dicom_orientations": "ImageOrientationPatient",
            "dicom_duplicate": "share one position", "dicom_sizes": "slice size"}


def _other_cases(folder: Path) -> dict[str, str]:
    from PIL import Image

    Image.fromarray(np.zeros((9, 8), np.uint8)).save(folder / "png_2d.png")
    (folder / "png_truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (folder / "tiff_corrupt.tif").write_bytes(b"II*\0" + os.urandom(50))
    save_nifti(folder / "multi_0000.nii.gz", GOOD, AFFINE)
    save_nifti(folder / "multi_0001.nii.gz", GOOD, AFFINE)
    save_nifti(folder / "dup.nii.gz", GOOD, AFFINE)
    save_nrrd(folder / "dup.nrrd", (GOOD * 10).astype(np.int16), AFFINE)
    (folder / "link_loop_a.nii.gz").symlink_to(folder / "link_loop_b.nii.gz")
    (folder / "link_loop_b.nii.gz").symlink_to(folder / "link_loop_a.nii.gz")
    (folder / "link_dangling.nii.gz").symlink_to(folder.parent / "deleted.nii.gz")
    os.mkfifo(folder / "fifo.nii.gz")
    (folder / "folder_named_like_an_image.nii.gz").mkdir()
    (folder / "random_files").mkdir()
    (folder / "random_files" / "a.bin").write_bytes(b"\1\2\3")
    return {"png_2d": "image is 2D", "png_truncated": "", "tiff_corrupt": "", "multi": "channel files",
            "dup.nrrd": "duplicate case id 'dup'", "link_loop_a.nii.gz": "symbolic link loop",
            "link_loop_b.nii.gz": "symbolic link loop", "link_dangling.nii.gz": "dangling symbolic link",
            "fifo.nii.gz": "not a regular file", "folder_named_like_an_image.nii.gz": "empty folder",
            "random_files": "holds no DICOM files"}


def write_corpus(folder: Path) -> dict[str, str]:
    """Write the malformed cases into ``folder`` (beside whatever is there); per case id, a phrase its
    error must contain ("" where the reader's own words vary, e.g. with the library version)."""
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}
    for writer in (_nifti_cases, _nrrd_cases, _mha_cases, _dicom_cases, _other_cases):
        expected.update(writer(folder))
    return expected
