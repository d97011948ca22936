"""RTSTRUCT output for DICOM series inputs (pydicom; highdicom writes no RT Structure Set).

One ROI per structure of the model (each foreground class, then each region: the structures of
``--statistics``), named after it and coloured with the bundle's ``label_codes`` colour (else the
preview palette). Each ROI holds, per slice of the source series, the closed planar contours of its
mask along pixel edges (:mod:`seg_runtime.contours`): separate components are separate contours and
holes are inner contours, so the even-odd (XOR) fill of a slice's contours gives the label map's
mask back exactly. Every contour references its source image; the structure set references the
study, the series and the frame of reference of the source, and copies patient and study attributes
from it (never invents them, see :mod:`seg_runtime.dicom_sources`).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path
from .bundle import Bundle
from .contours import mask_contours, rasterise
from .dicom_sources import referenced_series
from .geometry import CaseError
from .preview import PALETTE
from .readers.dicom import Series
from .statistics import structures

RTSTRUCT_SUFFIX = ".rtstruct.dcm"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
# The SOP class the RT Referenced Study Sequence names for a study (Detached Study Management, as
# every RT system writes it).
STUDY_COMPONENT_CLASS = "1.2.840.10008.3.1.2.3.1"
_COPIED = ("SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
           "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription")


def write_rtstruct(path: str | os.PathLike[str], labels: np.ndarray, series_dir: str | os.PathLike[str],
                   bundle: Bundle, *, software_version: str = "") -> Path:
    """Write a label map of a DICOM series as an RT Structure Set (atomically).

    Args:
        path: Destination (conventionally ``<id>.rtstruct.dcm``).
        labels: Label map on the series' grid as read: axes (column, row, slice in volume order).
            Shape: [X, Y, Z].
        series_dir: The folder holding the source series.
        bundle: Structure names, regions, colours and the model's name.
        software_version: Recorded as SoftwareVersions.

    Raises:
        CaseError: A source that cannot be referenced, or a label map that does not fit the series.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    series = referenced_series(series_dir)
    first = series.slices[0][1]
    if labels.shape != (int(first.Columns), int(first.Rows), len(series.slices)):
        raise CaseError(f"{series_dir}: label map {labels.shape} does not match the series "
                        f"({first.Columns} x {first.Rows} x {len(series.slices)} slices)")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = RTSTRUCT_STORAGE, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    _header(ds, first, bundle, software_version)
    ds.ReferencedFrameOfReferenceSequence = [_referenced_frame(series)]
    found = structures(bundle.labels, bundle.regions)
    ds.StructureSetROISequence = [_roi(number, name, first.FrameOfReferenceUID)
                                  for number, (name, _, _) in enumerate(found, 1)]
    ds.ROIContourSequence = [_roi_contours(number, np.isin(labels, members), series, _colour(bundle, name, members))
                             for number, (name, _, members) in enumerate(found, 1)]
    ds.RTROIObservationsSequence = [_observation(number) for number in range(1, len(found) + 1)]
    path = Path(path)
    with atomic_path(path) as tmp:
        ds.save_as(str(tmp), enforce_file_format=True)
    return path


def _header(ds: Any, first: Any, bundle: Bundle, version: str) -> None:
    """Patient, study, RT series, frame of reference, equipment, structure set and SOP common attributes."""
    from pydicom.uid import generate_uid

    for keyword in _COPIED:
        if keyword in first:
            setattr(ds, keyword, first.get(keyword))
    now = datetime.datetime.now()
    model = str(bundle.provenance.get("model", "seg model"))
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_STORAGE, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID = "RTSTRUCT", generate_uid()
    ds.SeriesNumber = int(first.get("SeriesNumber", 0) or 0) + 2000
    ds.SeriesDescription = f"seg {model}"[:64]
    ds.OperatorsName, ds.InstanceNumber = "", 1
    ds.Manufacturer, ds.ManufacturerModelName = "seg", model[:64]
    ds.SoftwareVersions, ds.DeviceSerialNumber = version or "unknown", "0"
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    ds.StructureSetLabel = "seg"
    ds.StructureSetName = model[:64]
    ds.StructureSetDate, ds.StructureSetTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.StructureSetDate, ds.StructureSetTime


def _image_ref(ds: Any) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    return item


def _referenced_frame(series: Series) -> Any:
    """The frame of reference, study and series the structure set is drawn on, with every image."""
    from pydicom.dataset import Dataset

    first = series.slices[0][1]
    series_item = Dataset()
    series_item.SeriesInstanceUID = first.SeriesInstanceUID
    series_item.ContourImageSequence = [_image_ref(ds) for _, ds in series.slices]
    study = Dataset()
    study.ReferencedSOPClassUID, study.ReferencedSOPInstanceUID = STUDY_COMPONENT_CLASS, first.StudyInstanceUID
    study.RTReferencedSeriesSequence = [series_item]
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = [study]
    return frame


def _roi(number: int, name: str, frame_uid: str) -> Any:
    from pydicom.dataset import Dataset

    roi = Dataset()
    roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = number, frame_uid, name[:64]
    roi.ROIGenerationAlgorithm = "AUTOMATIC"
    return roi


def _observation(number: int) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ObservationNumber, item.ReferencedROINumber = number, number
    item.RTROIInterpretedType, item.ROIInterpreter = "", ""
    return item


def _colour(bundle: Bundle, name: str, members: Sequence[int]) -> list[int]:
    entry = bundle.label_codes.get(name) or {}
    if entry.get("rgb"):
        return [int(v) for v in entry["rgb"]]
    return [int(v) for v in PALETTE[(members[0] - 1) % len(PALETTE)]] if members else [255, 0, 0]


def _roi_contours(number: int, mask: np.ndarray, series: Series, colour: list[int]) -> Any:
    """One ROI's contours, slice by slice, in patient coordinates (LPS, mm)."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedROINumber, item.ROIDisplayColor = number, colour
    spacing = [float(v) for v in series.slices[0][1].PixelSpacing]
    contours = []
    for index, (_, ds) in enumerate(series.slices):
        for loop in mask_contours(mask[:, :, index]):
            points = (series.positions[index] + np.outer(loop[:, 0] * spacing[1], series.row)
                      + np.outer(loop[:, 1] * spacing[0], series.col))
            contour = Dataset()
            contour.ContourImageSequence = [_image_ref(ds)]
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourNumber = len(contours) + 1
            contour.ContourData = [f"{v:.10g}"[:16] for v in points.ravel()]
            contours.append(contour)
    if contours:  # type 3: an empty structure has none
        item.ContourSequence = contours
    return item


def rtstruct_masks(path: str | os.PathLike[str], series_dir: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Rasterise an RT Structure Set back onto its source series' grid (even-odd per slice).

    Returns:
        ROI name -> mask. Shape: [X, Y, Z] (the reader's axes and slice order), bool.
    """
    import pydicom

    ds = pydicom.dcmread(path)
    series = referenced_series(series_dir)
    first = series.slices[0][1]
    shape = (int(first.Columns), int(first.Rows))
    slice_of = {str(s.SOPInstanceUID): index for index, (_, s) in enumerate(series.slices)}
    spacing = [float(v) for v in first.PixelSpacing]
    names = {int(roi.ROINumber): str(roi.ROIName) for roi in ds.StructureSetROISequence}
    masks = {}
    for item in ds.ROIContourSequence:
        per_slice: dict[int, list[np.ndarray]] = {}
        for contour in item.get("ContourSequence", []):
            index = slice_of[str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID)]
            points = np.asarray(contour.ContourData, dtype=np.float64).reshape(-1, 3) - series.positions[index]
            pixels = np.stack([points @ series.row / spacing[1], points @ series.col / spacing[0]], axis=1)
            per_slice.setdefault(index, []).append(pixels)
        mask = np.zeros((*shape, len(series.slices)), dtype=bool)
        for index, loops in per_slice.items():
            mask[:, :, index] = rasterise(loops, shape)
        masks[names[int(item.ReferencedROINumber)]] = mask
    return masks
