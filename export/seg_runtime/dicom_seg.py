"""DICOM-SEG output for DICOM series inputs, via the optional ``highdicom`` package.

The segmentation references the source series (same Frame of Reference, one frame per source
slice), so PACS viewers overlay it on the scan. One segment per foreground class, named after
the bundle's label, with the category/type codes and display colour of the bundle's
``label_codes`` (:mod:`seg_runtime.label_codes`); labels without codes fall back to the generic
SNOMED "Tissue" (with a warning).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path
from .bundle import Bundle
from .dicom_sources import referenced_series
from .errors import SegError
from .geometry import CaseError
from .label_codes import coded_concept

logger = logging.getLogger(__name__)

DICOM_SEG_SUFFIX = ".seg.dcm"
INSTALL_HINT = 'pip install "{dist}[dicom]"'  # the extra that brings highdicom, per distribution
class DicomSegUnavailable(SegError, ValueError):
    """DICOM-SEG output was asked for but highdicom is not installed."""


def require_highdicom(dist: str = "seg-runtime") -> None:
    """Raise :class:`DicomSegUnavailable` (with the install command) unless highdicom imports.

    Args:
        dist: The distribution whose ``[dicom]`` extra the hint names (``seg-runtime`` or ``seg``).
    """
    try:
        import highdicom  # noqa: F401
    except ImportError as exc:
        hint = INSTALL_HINT.format(dist=dist)
        raise DicomSegUnavailable(f"--dicom-seg needs the highdicom package: {hint}") from exc


def write_dicom_seg(
    path: str | os.PathLike[str],
    labels: np.ndarray,
    series_dir: str | os.PathLike[str],
    bundle: Bundle,
    *,
    software_version: str = "",
) -> Path:
    """Write a label map of a DICOM series as a DICOM-SEG file (atomically).

    Args:
        path: Destination (conventionally ``<id>.seg.dcm``).
        labels: Label map on the series' grid as read by ``read_dicom_series``: axes (column,
            row, slice sorted along the slice normal). Shape: [X, Y, Z].
        series_dir: The folder holding the source series.
        bundle: For the segment names and the model name.
        software_version: Recorded as SoftwareVersions.

    Returns:
        The written path.

    Raises:
        CaseError: The source series cannot be referenced (no study, series or frame of reference UID; shape mismatch).
    """
    import highdicom as hd

    sources = [ds for _, ds in referenced_series(series_dir).slices]
    frames = _frames(labels, sources, series_dir)
    first = sources[0]
    model = str(bundle.provenance.get("model", "seg model"))
    segmentation = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions(bundle, model, software_version),
        series_instance_uid=hd.UID(),
        series_number=int(first.get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="seg",
        manufacturer_model_name=model[:64],
        software_versions=software_version or "unknown",
        device_serial_number="0",
        series_description=f"seg {model}"[:64],
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        segmentation.save_as(str(tmp))
    return path


def _frames(labels: np.ndarray, sources: list[Any], series_dir: str | os.PathLike[str]) -> np.ndarray:
    """Labels as one frame per source slice (Shape: [Z, rows, columns], uint8), checked."""
    frames = np.ascontiguousarray(np.transpose(labels, (2, 1, 0))).astype(np.uint8, copy=False)
    first = sources[0]
    if frames.shape != (len(sources), int(first.Rows), int(first.Columns)):
        raise CaseError(
            f"{series_dir}: label map {labels.shape} does not match the series "
            f"({first.Columns} x {first.Rows} x {len(sources)} slices)"
        )
    return frames


def _segment_descriptions(bundle: Bundle, model: str, version: str) -> list[Any]:
    """One description per foreground class (segment number = label value)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=model[:64], version=version or "unknown", family=codes.cid7162.ArtificialIntelligence
    )
    names = {index: name for name, index in bundle.labels.items()}
    descriptions = []
    for index in range(1, bundle.num_classes):
        name = names.get(index, f"class_{index}")
        entry = bundle.label_codes.get(name)
        rgb = entry.get("rgb") if entry else None
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=index,
                segment_label=name[:64],
                segmented_property_category=coded_concept(entry["category"]) if entry else codes.SCT.Tissue,
                segmented_property_type=coded_concept(entry["type"]) if entry else codes.SCT.Tissue,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                display_color=hd.color.CIELabColor.from_rgb(*rgb) if rgb else None,
            )
        )
    return descriptions


def warn_uncoded_labels(bundle: Bundle) -> None:
    """Warn (once, at the start of a ``--dicom-seg`` run) about labels without ``label_codes``."""
    names = {index: name for name, index in bundle.labels.items()}
    uncoded = [names.get(i, f"class_{i}") for i in range(1, bundle.num_classes)
               if names.get(i, f"class_{i}") not in bundle.label_codes]
    if uncoded:
        logger.warning(
            "DICOM-SEG: no label_codes for %s in the bundle; coded as generic SNOMED 'Tissue' "
            "(add data.label_codes to the config and re-export)",
            ", ".join(uncoded),
        )
