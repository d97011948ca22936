"""The pre-training data check: open every case and name everything that would break training."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from seg.config import DataConfig
from seg.data.datalist import DataItem
from seg_runtime.errors import DataError
from seg_runtime.geometry import CaseError, Geometry
from seg_runtime.io import read_image

logger = logging.getLogger(__name__)


def read_channels(path: str | Path, spatial_dims: int) -> tuple[np.ndarray, Geometry]:
    """Read one image file channel-first, through the runtime's reader.

    Returns:
        (array, geometry); array Shape: [C, *spatial], C > 1 for 4D NIfTI or RGB images.

    Raises:
        CaseError: the file is missing or cannot be read.
    """
    array, geometry = read_image(Path(path))
    channels = np.asarray(array)
    if channels.ndim == len(geometry.shape):  # the runtime's contract: a channel axis only when present
        channels = channels[..., None]
    channels = np.moveaxis(channels, -1, 0)
    if spatial_dims == 2 and tuple(geometry.shape[2:]) == (1,):
        channels = channels[..., 0]  # a one-slice volume is a 2D image
    return channels, geometry


def label_lookup(data: DataConfig) -> dict[int, int]:
    """Raw label value → class index: ``data.label_values`` when set, else the identity on the label map."""
    if data.label_values is not None:
        return {int(k): int(v) for k, v in data.label_values.items()}
    return {v: v for v in data.labels.values()}


def check_datalist(items: list[DataItem], data: DataConfig, record: Any = None) -> None:
    """Open every case and check it can be trained on; run this before training.

    With a ``record`` (:class:`seg.data.case_cache.CheckRecord`), cases that passed before with the
    same files and settings are not opened again, and the cases that pass now are added to it.

    Checks: files exist and are readable; image dimensionality; channel count equals
    ``len(data.channel_names)``; channels and label share shape and affine; label values are in the
    label map (raw values of ``data.label_values`` when set); no NaN/Inf in the image.

    Raises:
        DataError: listing every bad case, e.g.
            ``case pat0003: label OTMultiClass.nii.gz has values {7} not in the label map {0..4}``.
    """
    lookup, classes = label_lookup(data), set(data.labels.values())
    settings_problems = [
        f"data.label_values maps to {v}, which is not a class of data.labels {_fmt(classes)}"
        for v in sorted(set(lookup.values()) - classes)
    ]
    problems = list(settings_problems)
    todo = [item for item in items if record is None or not record.passed(item)]
    passed = []
    for item in tqdm(todo, desc="checking cases", unit="case", disable=None, leave=False):
        found = _case_problems(item, data, lookup)
        problems += [f"case {item['id']}: {p}" for p in found]
        if not found:
            passed.append(item)
    if record is not None and not settings_problems:
        record.mark(passed)
    if problems:
        bad = len({p.split(":", 1)[0] for p in problems if p.startswith("case ")})
        head = f"{bad} of {len(items)} cases failed the data check" if bad else "the data check failed"
        raise DataError(head + ":\n  " + "\n  ".join(problems), problems)
    logger.info("data check passed for %d cases (%d opened, the rest unchanged since they passed)", len(items),
                len(todo))


def _fmt(values: set[int]) -> str:
    """``{0..4}`` for a run of integers, else ``{0, 255}``."""
    ordered = sorted(values)
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{{{ordered[0]}..{ordered[-1]}}}"
    return "{" + ", ".join(str(v) for v in ordered) + "}"


def _case_problems(item: DataItem, data: DataConfig, lookup: dict[int, int]) -> list[str]:
    problems: list[str] = []
    geometries: list[tuple[str, Geometry]] = []
    channels = 0
    for path in item["image"]:
        array, geometry = _open(Path(path), "image", data.spatial_dims, problems)
        if array is None:
            continue
        channels += array.shape[0]
        geometries.append((Path(path).name, geometry))
        if not np.isfinite(array).all():
            bad = int(np.size(array) - np.isfinite(array).sum())
            problems.append(f"image {Path(path).name} has {bad} NaN/Inf voxels")
    if len(geometries) == len(item["image"]) and channels != len(data.channel_names):
        problems.append(f"has {channels} channels but data.channel_names lists {len(data.channel_names)}")
    if item.get("label") is None:
        problems.append("has no label")
    else:
        label, geometry = _open(Path(item["label"]), "label", data.spatial_dims, problems)
        if label is not None:
            geometries.append((Path(item["label"]).name, geometry))
            problems += _label_value_problems(label, Path(item["label"]).name, lookup, data)
    problems += _geometry_problems(geometries, data.spatial_dims)
    return problems


def _open(path: Path, role: str, spatial_dims: int, problems: list[str]) -> tuple[np.ndarray | None, Any]:
    if not path.is_file():
        problems.append(f"{role} {path.name} is missing ({path})")
        return None, None
    try:
        array, geometry = read_channels(path, spatial_dims)
    except (CaseError, OSError, ValueError) as err:  # reported with every other problem, not raised alone
        problems.append(f"{role} {path.name} cannot be read: {err}")
        return None, None
    if len(geometry.shape) != spatial_dims and not (spatial_dims == 2 and tuple(geometry.shape[2:]) == (1,)):
        problems.append(
            f"{role} {path.name} is {len(geometry.shape)}D but data.spatial_dims is {spatial_dims}"
        )
        return None, None
    return array, geometry


def _label_value_problems(
    label: np.ndarray, name: str, lookup: dict[int, int], data: DataConfig
) -> list[str]:
    if label.shape[0] != 1 and not (label == label[:1]).all():  # grey saved as RGB is still one map
        return [f"label {name} has {label.shape[0]} different channels; a label map has one"]
    values = np.unique(label[0])
    odd = values[~np.isfinite(values) | (values != np.round(values))]
    if odd.size:
        return [f"label {name} holds non-integer values (e.g. {odd[:3].tolist()})"]
    unknown = {int(v) for v in values} - set(lookup)
    if not unknown:
        return []
    where = "data.label_values" if data.label_values is not None else "the label map"
    return [f"label {name} has values {_fmt(unknown)} not in {where} {_fmt(set(lookup))}"]


def _geometry_problems(geometries: list[tuple[str, Geometry]], spatial_dims: int) -> list[str]:
    if len(geometries) < 2:
        return []
    ref_name, ref = geometries[0]
    problems = []
    for name, geometry in geometries[1:]:
        shape, ref_shape = tuple(geometry.shape)[:spatial_dims], tuple(ref.shape)[:spatial_dims]
        if shape != ref_shape:
            problems.append(f"{name} has shape {shape} but {ref_name} has {ref_shape}")
        elif not np.allclose(geometry.affine, ref.affine, rtol=1e-5, atol=1e-3):
            # Same shape but a different voxel-to-world mapping: training would pair the wrong voxels.
            problems.append(
                f"{name} affine differs from {ref_name}'s (max difference "
                f"{float(np.abs(geometry.affine - ref.affine).max()):.3g})"
            )
    return problems
