"""DICOM series written the way scanners and anonymisers leave them, for the reader, the writers and the node.

``write_series`` places slice ``k`` at ``origin + k * affine[:, 2]`` with the orientation of the affine's
first two columns, so any right-handed affine works: axis-aligned, oblique, or sheared (a gantry tilt:
the slices step along the table, not along their normal). ``anonymised=True`` leaves what real
anonymised exports carry: an empty SOPClassUID in the data set (the file meta keeps the class), type-2
attributes empty or missing, type-3 ones gone, private tags (a Siemens-like CSA block).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# Fixed UIDs under pydicom's test root, so tests can name them.
STUDY_UID = "1.2.826.0.1.3680043.8.498.10001"
FRAME_UID = "1.2.826.0.1.3680043.8.498.10002"
_LPS = np.diag([-1.0, -1.0, 1.0])


def tilted_affine(spacing: tuple[float, float, float] = (0.7, 0.7, 2.0), tilt_deg: float = 15.0) -> np.ndarray:
    """A RAS affine of a gantry-tilted CT: rows along x, columns tilted about x, slices stepping along z."""
    t = np.deg2rad(tilt_deg)
    affine = np.eye(4)
    # LPS row (1,0,0), column (0, cos t, -sin t); the table moves along +z (superior).
    lps = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(t), 0.0], [0.0, -np.sin(t), 1.0]])
    affine[:3, :3] = _LPS @ lps @ np.diag(spacing)
    affine[:3, 3] = [20.0, -15.0, -40.0]
    return affine


def write_series(
    folder: Path,
    volume: np.ndarray,
    affine: np.ndarray,
    *,
    modality: str = "CT",
    slope: float = 1.0,
    intercept: float = 0.0,
    series_uid: str | None = None,
    study_uid: str = STUDY_UID,
    frame_uid: str = FRAME_UID,
    patient_id: str = "P1",
    transfer_syntax: str | None = None,
    anonymised: bool = False,
    description: str = "",
    shuffle: bool = True,
    name: Callable[[int], str] = lambda k: f"IM{k * 7 % 11:04d}-{k}",
    edit: Callable[[Any, int], None] | None = None,
) -> list[Path]:
    """Write ``volume`` (rescaled values; Shape: [X=columns, Y=rows, Z=slices]) as a single-frame series.

    Returns:
        The written files, in slice order.
    """
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    steps, origin = _LPS @ affine[:3, :3], _LPS @ affine[:3, 3]
    spacing = np.linalg.norm(steps[:, :2], axis=0)
    row, col = steps[:, 0] / spacing[0], steps[:, 1] / spacing[1]
    assert np.dot(np.cross(row, col), steps[:, 2]) > 0, "slices must step along the normal's side"
    series_uid = series_uid or generate_uid()
    stored = np.rint((volume - intercept) / slope).astype(np.int16 if modality == "CT" else np.uint16)
    order = np.random.default_rng(0).permutation(volume.shape[2]) if shuffle else range(volume.shape[2])
    written: dict[int, Path] = {}
    for k in (int(k) for k in order):
        ds = _slice(stored[:, :, k], modality, transfer_syntax or ExplicitVRLittleEndian)
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = series_uid, study_uid, frame_uid
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = patient_id, "Test^Patient", "", "O"
        ds.StudyID, ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "1", "20240101", "120000", ""
        ds.ReferringPhysicianName, ds.SeriesNumber, ds.InstanceNumber = "", 3, k + 1
        ds.SeriesDescription = description
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in (*row, *col)]
        ds.ImagePositionPatient = [f"{v:.10g}" for v in origin + k * steps[:, 2]]
        ds.PixelSpacing = [f"{spacing[1]:.10g}", f"{spacing[0]:.10g}"]
        ds.SliceThickness = f"{abs(float(np.dot(np.cross(row, col), steps[:, 2]))):.10g}"
        if modality == "CT":
            ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        if anonymised:
            _anonymise(ds)
        if edit is not None:
            edit(ds, k)
        written[k] = folder / name(k)
        _save(ds, written[k])
    return [written[k] for k in sorted(written)]


def _slice(plane: np.ndarray, modality: str, transfer_syntax: str) -> Any:
    """A data set with file meta and pixels of one plane (Shape: [columns, rows])."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows, ds.Columns = plane.shape[1], plane.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if plane.dtype == np.int16 else 0
    ds.PixelData = np.ascontiguousarray(plane.T).tobytes()
    return ds


def _anonymise(ds: Any) -> None:
    """What an anonymiser leaves: empty SOPClassUID, empty or missing type 2, no type 3, private tags."""
    ds.SOPClassUID = ""
    ds.PatientName, ds.StudyDate, ds.StudyTime = "", "", ""
    for keyword in ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "AccessionNumber", "StudyID",
                    "SeriesDescription", "ImageType"):
        if keyword in ds:
            delattr(ds, keyword)
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x10, "OB", b"SV10\x04\x03\x02\x01" + bytes(64))
    block.add_new(0x08, "CS", "IMAGE NUM 4")


def _save(ds: Any, path: Path) -> None:
    """Save in the file meta's transfer syntax (big endian pixels swapped; deflate and RLE encoded)."""
    from pydicom.uid import ExplicitVRBigEndian, RLELossless

    syntax = ds.file_meta.TransferSyntaxUID
    if syntax == RLELossless:
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
        ds.compress(RLELossless)
    elif syntax == ExplicitVRBigEndian:
        dtype = ">i2" if ds.PixelRepresentation else ">u2"
        ds.PixelData = np.frombuffer(ds.PixelData, "<i2" if ds.PixelRepresentation else "<u2").astype(dtype).tobytes()
    from pydicom import dcmwrite

    if syntax == ExplicitVRBigEndian:  # retired, and pydicom only writes it when forced
        dcmwrite(str(path), ds, implicit_vr=False, little_endian=False, force_encoding=True)
    else:
        dcmwrite(str(path), ds, enforce_file_format=True)


def add_localizer(folder: Path, like: Path, name: str = "LOCALIZER") -> Path:
    """A scout image in the same series (same UIDs), in another plane: must never enter the volume."""
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(like)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]  # coronal
    ds.save_as(str(folder / name), enforce_file_format=True)
    return folder / name


def add_multiframe(folder: Path, like: Path, name: str = "ENHANCED") -> Path:
    """An Enhanced CT object (two frames) in the same series: skipped, never mixed into the volume."""
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(like)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    ds.save_as(str(folder / name), enforce_file_format=True)
    return folder / name


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's error lines for a file (Debian's dicom3tools; the test skips where it is not installed)."""
    import pytest

    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
