"""Per-structure statistics of a predicted case: size and the input's intensities inside it.

For every structure of the model (each foreground class, and each region: a union of classes) a
case gets its voxel count, its volume in millilitres (voxel count x voxel volume; 2D cases: area in
mm^2) and, per input channel, the mean, standard deviation, minimum, 5th/25th/50th/75th/95th
percentiles and maximum of the input inside it (the values as read, e.g. Hounsfield units after the
DICOM rescale, on the input grid). ``--statistics`` writes one JSON per case
(``OUTPUT/statistics/<case>.json``) as the case finishes and one CSV over the run
(``OUTPUT/statistics.csv``, one row per case, structure and channel), streamed from the per-case
files when the run ends: memory per case is one structure's mask and values at a time, and the run
holds one case's JSON at a time whatever its length.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_open, atomic_write_json

STATISTICS_DIR = "statistics"
STATISTICS_CSV = "statistics.csv"
PERCENTILES = (5, 25, 50, 75, 95)
INTENSITY_KEYS = ("mean", "std", "min", *(f"p{p:02d}" for p in PERCENTILES), "max")
CSV_COLUMNS = ("case", "structure", "kind", "labels", "voxels", "volume_ml", "area_mm2", "channel",
               *INTENSITY_KEYS)


def statistics_path(output: str | os.PathLike[str], case_id: str) -> Path:
    """``OUTPUT/statistics/<case>.json``."""
    return Path(output) / STATISTICS_DIR / f"{case_id}.json"


def csv_name(manifest_name: str) -> str:
    """The run's CSV beside its summary: ``statistics.csv``, or one per shard."""
    stem = Path(manifest_name).stem  # predictions / predictions.shard-0-of-4
    return STATISTICS_CSV if stem == "predictions" else f"statistics{stem[len('predictions'):]}.csv"


def structures(class_labels: Mapping[str, int], regions: Mapping[str, Sequence[int]]) -> list[tuple[str, str, list[int]]]:
    """``(name, kind, class indices)`` of every structure: foreground classes by index, then regions."""
    found = [(name, "class", [int(index)]) for name, index in sorted(class_labels.items(), key=lambda kv: kv[1])
             if index != 0]
    found += [(name, "region", sorted({int(i) for i in members} - {0})) for name, members in regions.items()]
    return found


def intensity(values: np.ndarray) -> dict[str, float] | None:
    """Mean, std (population), min, percentiles and max of ``values`` (None when empty)."""
    if values.size == 0:
        return None
    wide = values.astype(np.float64, copy=False)
    mean = float(wide.mean())
    quantiles = np.percentile(wide, PERCENTILES)
    result = {"mean": mean, "std": float(np.sqrt(np.mean((wide - mean) ** 2))), "min": float(wide.min())}
    result.update({f"p{p:02d}": float(q) for p, q in zip(PERCENTILES, quantiles, strict=True)})
    result["max"] = float(wide.max())
    return result


def case_statistics(
    labels: np.ndarray,
    image: np.ndarray | None,
    spacing: Sequence[float],
    class_labels: Mapping[str, int],
    regions: Mapping[str, Sequence[int]],
    channel_names: Sequence[str],
) -> dict[str, Any]:
    """The statistics of one case.

    Args:
        labels: The final label map on the input grid. Shape: [*S] (2D or 3D).
        image: The input as read (float32), or None for sizes only. Shape: [C, *S].
        spacing: Voxel size per spatial axis in mm (at least ``labels.ndim`` entries).
        class_labels: Class name -> label value.
        regions: Region name -> the class values it unites.
        channel_names: One name per input channel.

    Returns:
        ``{"spatial_dims", "voxel_size_mm", "voxel_volume_mm3" (3D) or "pixel_area_mm2" (2D),
        "channels", "structures": [{"name", "kind", "labels", "voxels", "volume_ml" | "area_mm2",
        "intensity": {channel: {mean, std, min, p05..p95, max} | None} | None}]}``.
    """
    if image is not None and tuple(image.shape[1:]) != tuple(labels.shape):
        raise ValueError(f"image {image.shape[1:]} and labels {labels.shape} differ in shape")
    ndim = labels.ndim
    size = [float(s) for s in spacing[:ndim]]
    unit_size = math.prod(size)
    counts = np.bincount(labels.ravel(), minlength=1)
    result: dict[str, Any] = {"spatial_dims": ndim, "voxel_size_mm": size,
                              ("voxel_volume_mm3" if ndim == 3 else "pixel_area_mm2"): unit_size,
                              "channels": list(channel_names), "structures": []}
    for name, kind, members in structures(class_labels, regions):
        voxels = int(sum(int(counts[m]) for m in members if m < counts.size))
        entry: dict[str, Any] = {"name": name, "kind": kind, "labels": members, "voxels": voxels}
        if ndim == 3:
            entry["volume_ml"] = voxels * unit_size / 1000.0
        else:
            entry["area_mm2"] = voxels * unit_size
        entry["intensity"] = None if image is None else _channels(labels, image, members, voxels, channel_names)
        result["structures"].append(entry)
    return result


def _channels(labels: np.ndarray, image: np.ndarray, members: list[int], voxels: int,
              channel_names: Sequence[str]) -> dict[str, dict[str, float] | None]:
    """Per channel, the intensities inside one structure (one mask, one channel's values at a time)."""
    if voxels == 0:
        return dict.fromkeys(channel_names)
    mask = labels == members[0] if len(members) == 1 else np.isin(labels, members)
    return {name: intensity(channel[mask]) for name, channel in zip(channel_names, image, strict=True)}


def write_case_statistics(path: str | os.PathLike[str], case_id: str, stats: dict[str, Any]) -> Path:
    """Write one case's statistics JSON atomically."""
    atomic_write_json(path, {"case": case_id, **stats})
    return Path(path)


def csv_rows(case_stats: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """The CSV rows of one case's statistics: one per structure and channel."""
    for entry in case_stats["structures"]:
        base = {"case": case_stats["case"], "structure": entry["name"], "kind": entry["kind"],
                "labels": " ".join(str(m) for m in entry["labels"]), "voxels": entry["voxels"],
                "volume_ml": entry.get("volume_ml", ""), "area_mm2": entry.get("area_mm2", "")}
        per_channel = entry.get("intensity") or dict.fromkeys(case_stats.get("channels") or [""])
        for channel, values in per_channel.items():
            yield {**base, "channel": channel, **(values or dict.fromkeys(INTENSITY_KEYS, ""))}


def write_run_csv(path: str | os.PathLike[str], case_files: Iterable[Path]) -> tuple[Path, list[str]]:
    """Stream the per-case JSON files into one CSV (atomically); one file read at a time.

    Returns:
        The CSV's path and the case files that could not be read (missing or damaged).
    """
    missing: list[str] = []
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for case_file in case_files:
            try:
                stats = json.loads(Path(case_file).read_text(encoding="utf-8"))
                writer.writerows(csv_rows(stats))
            except (OSError, ValueError, KeyError, TypeError):
                missing.append(str(case_file))
    return Path(path), missing
