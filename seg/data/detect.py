"""Recognise a dataset folder's layout and read what it states about itself (``seg plan DATASET``).

From a folder alone this finds the layout (nnU-Net raw, MSD, case folders, 2D image folders), the
label map, channel names, file ending and spatial dims, and returns the ``data`` section of a
config. ``dataset.json`` is believed where it speaks (``labels``, ``channel_names``/``modality``,
``file_ending``); the rest is read from the first case's files.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from seg.config import DataConfig
from seg.data.check import read_channels
from seg.data.datalist import IMAGE_2D_SUFFIXES, DataError
from seg_runtime.io import image_suffix, read_image
from seg_runtime.labelmaps import read_label_map
from seg_runtime.naming import (
    DATASET_JSON,
    channel_file_name,
    dataset_file_ending,
    read_dataset_json,
    split_channel_name,
)

logger = logging.getLogger(__name__)

_LABEL_NAME = re.compile(r"(seg|label|^ot|gt|truth|annotation)", re.IGNORECASE)
_SKIP_NAME = re.compile(r"(mask|roi)", re.IGNORECASE)  # brain masks etc. are neither channel nor label
LABEL_FILES_READ = 5  # label maps read to find the label values when no dataset.json names them


def detect_data_config(root: str | Path) -> DataConfig:
    """The ``data`` section for a dataset folder, layout and metadata detected.

    Raises:
        DataError: the folder is missing or matches no known layout (the message names it).
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    meta_path = root / DATASET_JSON
    if meta_path.is_file():
        meta = read_dataset_json(root)
        if (root / "imagesTr").is_dir() and _has_channel_files(root / "imagesTr", dataset_file_ending(meta)):
            return _nnunet_config(root, meta)
        if isinstance(meta.get("training"), list):
            return _msd_config(root, meta)
        raise DataError(f"{meta_path}: neither nnU-Net raw (imagesTr/{channel_file_name('CASE', 0, dataset_file_ending(meta))}) nor MSD "
                        "(a 'training' list)")
    if (root / "images").is_dir():
        return _image_folder_config(root)
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    if folders:
        return _case_folder_config(root, folders)
    raise DataError(f"{root}: no dataset.json, images/ folder or case folders: cannot tell the layout")


def _has_channel_files(folder: Path, ending: str) -> bool:
    return any(split_channel_name(p.name, ending) is not None for p in folder.iterdir())


def _nnunet_config(root: Path, meta: dict[str, Any]) -> DataConfig:
    ending = dataset_file_ending(meta)
    first = sorted((root / "imagesTr").glob(channel_file_name("*", 0, ending)))[0]
    names = _channel_names(meta, root / DATASET_JSON)
    labels, values, regions = _meta_labels(meta, root / DATASET_JSON)
    return DataConfig(layout="nnunet", root=root, spatial_dims=_spatial_dims(first), channel_names=names,
                      labels=labels, label_values=values, regions=regions)


def _msd_config(root: Path, meta: dict[str, Any]) -> DataConfig:
    entry = meta["training"][0]
    image = entry.get("image") if isinstance(entry, dict) else None
    if not isinstance(image, str) or not (root / image).is_file():
        raise DataError(f"{root / 'dataset.json'}: the first training entry's image {image!r} is not a file")
    names = _channel_names(meta, root / DATASET_JSON)
    labels, values, regions = _meta_labels(meta, root / DATASET_JSON)
    return DataConfig(layout="msd", root=root, spatial_dims=_spatial_dims(root / image), channel_names=names,
                      labels=labels, label_values=values, regions=regions)


def _image_folder_config(root: Path) -> DataConfig:
    images = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_2D_SUFFIXES)
    if not images:
        raise DataError(f"{root / 'images'}: no .png/.tif images")
    channels = read_channels(images[0], 2)[0].shape[0]
    label_paths = sorted(p for p in (root / "labels").glob("*") if p.suffix.lower() in IMAGE_2D_SUFFIXES)
    labels, values = _labels_from_files(label_paths, 2)
    return DataConfig(layout="image_folders", root=root, spatial_dims=2, channel_names=_generic(channels),
                      labels=labels, label_values=values)


def _case_folder_config(root: Path, folders: list[Path]) -> DataConfig:
    first = folders[0]
    files = sorted(p.name for p in first.iterdir() if p.is_file() and image_suffix(p))
    label = [n for n in files if _LABEL_NAME.search(n) and not _SKIP_NAME.search(n)]
    channels = [n for n in files if n not in label and not _SKIP_NAME.search(n)]
    if len(label) != 1 or not channels:
        raise DataError(f"{first}: cannot tell the label file from the channel files among {files} "
                        "(expected one name with 'seg' or 'label' in it); write the config by hand")
    # A file named after its folder ("pat01_t1.nii.gz") becomes "{case}_t1.nii.gz" for every case.
    channel_files = [n.replace(first.name, "{case}") for n in channels]
    label_file = label[0].replace(first.name, "{case}")
    label_paths = [f / label_file.format(case=f.name) for f in folders[:LABEL_FILES_READ]]
    dims = _spatial_dims(first / channels[0])
    labels, values = _labels_from_files([p for p in label_paths if p.is_file()], dims)
    names = [_strip_suffix(n).replace(first.name, "").strip("_-") .split("_")[0] or f"channel{i}"
             for i, n in enumerate(channels)]
    return DataConfig(layout="case_folders", root=root, spatial_dims=dims, channel_names=names,
                      channel_files=channel_files, label_file=label_file, labels=labels, label_values=values)


def _strip_suffix(name: str) -> str:
    suffix = image_suffix(Path(name))
    return name[: -len(suffix)] if suffix else name


def _generic(count: int) -> list[str]:
    return ["image"] if count == 1 else [f"channel{c}" for c in range(count)]


def _spatial_dims(path: Path) -> int:
    """2 for raster images and one-slice volumes, else 3."""
    if path.suffix.lower() in IMAGE_2D_SUFFIXES:
        return 2
    try:
        shape = tuple(read_image(path)[1].shape)
    except Exception as err:  # any reader failure is the file's problem, reported as such
        raise DataError(f"{path}: cannot be read ({err})") from None
    return 2 if len(shape) == 2 or shape[2:] == (1,) else 3


def _channel_names(meta: dict[str, Any], path: Path) -> list[str]:
    raw = meta.get("channel_names") or meta.get("modality") or {}
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{path}: needs 'channel_names' (nnU-Net) or 'modality' (MSD), e.g. {{\"0\": \"CT\"}}")
    try:
        return [str(raw[k]) for k in sorted(raw, key=int)]
    except ValueError:
        raise DataError(f"{path}: channel keys must be 0, 1, ..., got {sorted(raw)}") from None


def dataset_json_labels(meta: dict[str, Any], path: Path) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Class name → value in the label files, and regions (name → values), from dataset.json ``labels``.

    nnU-Net v2 writes ``{name: value}`` (a list value is a region); MSD writes ``{"value": name}``.
    A value that only a region names becomes ``class_<value>``; value 0 is the background.

    Raises:
        DataError: no ``labels`` mapping, or a value that is not an integer (names ``path``).
    """
    raw = meta.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{path}: needs a 'labels' mapping, e.g. {{\"background\": 0, \"tumour\": 1}}")
    try:
        if all(str(k).isdigit() for k in raw):  # MSD
            named = {str(v): int(k) for k, v in raw.items()}
            region_lists: dict[str, list[int]] = {}
        else:
            named = {str(k): int(v) for k, v in raw.items() if not isinstance(v, list)}
            region_lists = {str(k): [int(x) for x in v] for k, v in raw.items() if isinstance(v, list)}
    except (TypeError, ValueError):
        raise DataError(f"{path}: 'labels' values must be integers (or lists of them), got {raw}") from None
    for value in sorted({x for v in region_lists.values() for x in v} - set(named.values())):
        named[f"class_{value}"] = value
    if 0 not in named.values():
        named = {"background": 0, **named}
    return named, region_lists


def _meta_labels(
    meta: dict[str, Any], path: Path
) -> tuple[dict[str, int], dict[int, int] | None, dict[str, list[int]]]:
    """Label map, raw→class remap (when values have gaps) and regions from dataset.json ``labels``."""
    named, region_lists = dataset_json_labels(meta, path)
    labels, values = _contiguous(named)
    regions = {k: [values[x] if values else x for x in v] for k, v in region_lists.items()}
    return labels, values, regions


def _contiguous(named: dict[str, int]) -> tuple[dict[str, int], dict[int, int] | None]:
    """Labels as 0..K-1 in value order; the raw→class remap when the raw values have gaps."""
    ordered = sorted(named.items(), key=lambda kv: kv[1])
    labels = {name: index for index, (name, _) in enumerate(ordered)}
    if all(value == index for index, (_, value) in enumerate(ordered)):
        return labels, None
    return labels, {value: index for index, (_, value) in enumerate(ordered)}


def _labels_from_files(paths: list[Path], dims: int) -> tuple[dict[str, int], dict[int, int] | None]:
    if not paths:
        raise DataError("no label files found: cannot read the label values")
    values: set[int] = set()
    for path in paths[:LABEL_FILES_READ]:
        array = read_label_map(path, dims)[0]
        values |= {int(v) for v in np.unique(np.rint(array))}
    values.add(0)
    named = {("background" if v == 0 else f"class_{v}"): v for v in sorted(values)}
    logger.info("label values %s read from %d label files", sorted(values), min(len(paths), LABEL_FILES_READ))
    return _contiguous(named)
