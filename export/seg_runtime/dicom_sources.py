"""The source images a derived DICOM object (DICOM-SEG, RTSTRUCT) references, made fit to be referenced.

Real scanners' and anonymisers' files are messier than the standard: an empty SOPClassUID in the data
set while the file meta holds the class, type-2 attributes missing instead of empty. What viewers
tolerate in *technical* attributes is tolerated here too — filled from the file meta or the SOP
class, with one warning saying what was filled — but identity attributes (the study, the series,
the frame of reference) are never invented: a source without them cannot be referenced, and the case
fails in one line.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from .geometry import CaseError
from .readers.dicom import Series, series_slices

logger = logging.getLogger(__name__)

# Type 2 attributes of the patient and study modules derived objects copy: present but possibly empty in
# valid files, yet some exporters drop them altogether. Empty means "unknown": nothing is invented.
TYPE2_EMPTY = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyID", "StudyDate", "StudyTime",
               "ReferringPhysicianName", "AccessionNumber")
# Without these a derived object cannot say what it belongs to.
REQUIRED_IDENTITY = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
MODALITY_OF_CLASS = {
    "1.2.840.10008.5.1.4.1.1.2": "CT",
    "1.2.840.10008.5.1.4.1.1.4": "MR",
    "1.2.840.10008.5.1.4.1.1.128": "PT",
    "1.2.840.10008.5.1.4.1.1.6.1": "US",
    "1.2.840.10008.5.1.4.1.1.7": "OT",
}


def referenced_series(series_dir: str | os.PathLike[str]) -> Series:
    """The series' slices in volume order (as the reader read them), their headers made referenceable.

    Raises:
        CaseError: A source without StudyInstanceUID, SeriesInstanceUID or FrameOfReferenceUID, or a
            SOP class / instance UID that neither the data set nor the file meta holds; and everything
            :func:`~seg_runtime.readers.dicom.series_slices` refuses.
    """
    series = series_slices(Path(series_dir))
    filled: Counter[str] = Counter()
    for path, ds in series.slices:
        for keyword in REQUIRED_IDENTITY:
            if not str(ds.get(keyword, "") or "").strip():
                raise CaseError(f"{path}: source DICOM has no {keyword}; it cannot be referenced (not invented)")
        for what in _fill_technical(path, ds):
            filled[what] += 1
        for keyword in TYPE2_EMPTY:
            if keyword not in ds:
                setattr(ds, keyword, "")
    if filled:
        logger.warning("%s: filled in technical attributes the source images leave empty: %s", series_dir,
                       "; ".join(f"{what} in {count} image(s)" for what, count in sorted(filled.items())))
    return series


def _fill_technical(path: Path, ds: Any) -> list[str]:
    """Fill an empty SOP class/instance UID from the file meta and an empty Modality from the SOP class."""
    done = []
    meta = getattr(ds, "file_meta", None) or {}
    for keyword, meta_keyword in (("SOPClassUID", "MediaStorageSOPClassUID"),
                                  ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
        if str(ds.get(keyword, "") or "").strip():
            continue
        value = str(meta.get(meta_keyword, "") or "").strip()
        if not value:
            raise CaseError(f"{path}: no {keyword} in the data set or its file meta")
        setattr(ds, keyword, value)
        done.append(f"{keyword} from the file meta ({getattr(ds[keyword].value, 'name', value)})")
    if not str(ds.get("Modality", "") or "").strip():
        modality = MODALITY_OF_CLASS.get(str(ds.SOPClassUID))
        if modality is None:
            raise CaseError(f"{path}: no Modality, and SOP class {ds.SOPClassUID} does not imply one")
        ds.Modality = modality
        done.append(f"Modality {modality} from the SOP class")
    return done
