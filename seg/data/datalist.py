"""Dataset layouts → case lists and train/validation splits (the data check: :mod:`seg.data.check`).

A case is a plain dict, the currency of the MONAI dictionary pipelines::

    {"id": "pat0003", "image": ["/abs/flair.nii.gz", "/abs/t1c.nii.gz"], "label": "/abs/seg.nii.gz"}

``image`` holds one path per channel file, in channel order; ``label`` is None when the layout has
no label for the case. Paths are absolute strings. Discovery only lists files; it never opens them,
so it is fast and a broken file surfaces in :func:`seg.data.check.check_datalist` with every other
problem.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np

from seg.config import DataConfig, SplitConfig
from seg.data.synthetic import make_synthetic_dataset
from seg_runtime.errors import DataError
from seg_runtime.formats import RASTER_SUFFIXES, strip_image_suffix
from seg_runtime.naming import (
    DATASET_JSON,
    channel_file_name,
    dataset_channel_names,
    dataset_file_ending,
    read_dataset_json,
    split_channel_name,
)

logger = logging.getLogger(__name__)

DataItem = dict[str, Any]
Subset = Literal["train", "test"]
IMAGE_2D_SUFFIXES = RASTER_SUFFIXES  # the runtime's one suffix table (seg_runtime.formats)


def natural_key(text: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that orders digit runs by value: "2" before "10", "case2" before "case10"."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text) if p)


# --------------------------------------------------------------------------------------------------
# Discovery


def build_datalist(data: DataConfig, subset: Subset = "train") -> list[DataItem]:
    """List the cases of a dataset, sorted by id (numbers by value).

    Layouts (``data.layout``):
        nnunet: nnU-Net v2 raw: dataset.json (``file_ending``, ``channel_names``), ``imagesTr/ID_0000.ext``
            (one file per channel), ``labelsTr/ID.ext``.
        msd: Medical Segmentation Decathlon dataset.json ``training`` / ``test`` entries. A 4D NIfTI
            holds all channels in one file, so ``image`` is a one-element list for these cases.
        case_folders: ``root/<case>/<data.channel_files...>`` and ``root/<case>/<data.label_file>``;
            ``{case}`` in a file name stands for the folder name.
        image_folders: 2D images ``root/<data.image_dir>/NAME.png`` (or .tif) paired by name with
            ``root/<data.label_dir>/NAME.png``.
        synthetic: the built-in phantoms, generated into ``data.root`` when absent, then read as nnunet.

    Args:
        data: the data section of the config.
        subset: "train" (imagesTr / training) or "test" (imagesTs / test; nnunet, msd and synthetic only).

    Returns:
        ``[{"id": str, "image": [str, ...], "label": str | None}, ...]``.

    Raises:
        DataError: no root, missing dataset.json or folders, duplicate ids, or no cases at all.
    """
    if data.root is None:
        raise DataError("data.root is not set: point it at the dataset folder")
    root = Path(data.root).expanduser().resolve()
    if data.layout == "synthetic":
        make_synthetic_dataset(root, spatial_dims=data.spatial_dims)
    if not root.is_dir():
        raise DataError(f"data.root {root} is not a folder")
    if subset == "test" and data.layout in ("case_folders", "image_folders"):
        raise DataError(
            f"layout {data.layout!r} has no separate test set; point a second config at it instead"
        )
    finder = {"msd": _msd_cases, "case_folders": _case_folder_cases, "image_folders": _image_folder_cases}
    items = finder.get(data.layout, _nnunet_cases)(root, data, subset)
    if not items:
        raise DataError(f"no {subset} cases found in {root} (layout {data.layout!r})")
    dupes = sorted((i for i, n in Counter(c["id"] for c in items).items() if n > 1), key=natural_key)
    if dupes:
        raise DataError(f"duplicate case ids in {root}: {dupes}")
    logger.info("found %d %s cases in %s (layout %s)", len(items), subset, root, data.layout)
    return sorted(items, key=lambda c: natural_key(c["id"]))


def _case(case_id: str, images: list[Path], label: Path | None) -> DataItem:
    return {"id": case_id, "image": [str(p) for p in images], "label": None if label is None else str(label)}


def _nnunet_cases(root: Path, data: DataConfig, subset: Subset) -> list[DataItem]:
    meta = read_dataset_json(root)
    ending = dataset_file_ending(meta)
    images_dir = root / ("imagesTr" if subset == "train" else "imagesTs")
    labels_dir = root / ("labelsTr" if subset == "train" else "labelsTs")
    if not images_dir.is_dir():
        raise DataError(f"{images_dir} not found (nnU-Net raw layout needs imagesTr/ and labelsTr/)")
    found: dict[str, set[int]] = {}
    for path in images_dir.iterdir():
        split = split_channel_name(path.name, ending)
        if split is None:
            if not path.name.startswith("."):
                logger.warning("ignoring %s: not named CASE_XXXX%s", path, ending)
            continue
        found.setdefault(split[0], set()).add(split[1])
    declared = len(dataset_channel_names(meta))
    # Expected paths for every declared channel: a missing one is reported by check_datalist.
    return [
        _case(
            case,
            [images_dir / channel_file_name(case, c, ending) for c in range(max(declared, max(channels) + 1))],
            labels_dir / f"{case}{ending}" if labels_dir.is_dir() else None,
        )
        for case, channels in found.items()
    ]


def _case_id(path: Path) -> str:
    return strip_image_suffix(path)


def _msd_cases(root: Path, data: DataConfig, subset: Subset) -> list[DataItem]:
    meta = read_dataset_json(root)
    key = "training" if subset == "train" else "test"
    entries = meta.get(key)
    if not isinstance(entries, list):
        raise DataError(f"{root / DATASET_JSON} has no {key!r} list (MSD layout)")
    items = []
    for entry in entries:
        image = entry.get("image") if isinstance(entry, dict) else entry  # MSD "test" lists bare paths
        if not isinstance(image, str):
            raise DataError(f"{root / DATASET_JSON}: {key} entry {entry!r} has no image path")
        label = entry.get("label") if isinstance(entry, dict) else None
        image_path = (root / image).resolve()
        items.append(_case(_case_id(image_path), [image_path], (root / label).resolve() if label else None))
    return items


def _case_folder_cases(root: Path, data: DataConfig, subset: Subset) -> list[DataItem]:
    if not data.channel_files:
        raise DataError("layout 'case_folders' needs data.channel_files (one file name per channel)")
    items = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = [folder / name.format(case=folder.name) for name in data.channel_files]
        label = folder / data.label_file.format(case=folder.name) if data.label_file else None
        if not any(p.exists() for p in [*images, *([label] if label else [])]):
            logger.warning("skipping %s: holds none of the channel or label files", folder)
            continue
        items.append(_case(folder.name, images, label))
    return items


def _image_folder_cases(root: Path, data: DataConfig, subset: Subset) -> list[DataItem]:
    images_dir, labels_dir = root / data.image_dir, root / data.label_dir
    if not images_dir.is_dir():
        raise DataError(
            f"{images_dir} not found (layout 'image_folders' reads data.image_dir inside data.root)"
        )
    labels: dict[str, Path] = {}
    if labels_dir.is_dir():
        for path in sorted(labels_dir.iterdir()):
            if path.suffix.lower() in IMAGE_2D_SUFFIXES:
                labels.setdefault(path.stem, path)
    else:
        logger.warning("%s not found: image_folders cases have no labels", labels_dir)
    items = []
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_2D_SUFFIXES or path.name.startswith("."):
            continue
        # The same name wins over the same stem, so a .tif label cannot shadow a .png one.
        label = labels_dir / path.name if (labels_dir / path.name).is_file() else labels.get(path.stem)
        if label is None and labels:
            label = labels_dir / path.name  # expected but absent: check_datalist reports it
        items.append(_case(path.stem, [path], label))
    return items


def split_datalist(items: list[DataItem], split: SplitConfig) -> tuple[list[DataItem], list[DataItem]]:
    """Split cases into training and validation.

    Explicit ``split.train`` / ``split.val`` id lists win (one given alone: the other is the rest);
    otherwise a deterministic k-fold: ids sorted (numbers by value), shuffled with ``split.seed``,
    dealt into ``split.folds`` folds whose sizes differ by at most one; fold ``split.fold`` validates.

    Returns:
        (train, val), each sorted by id.

    Raises:
        DataError: unknown or overlapping ids, or fewer cases than folds.
    """
    by_id = {c["id"]: c for c in items}
    if split.train is not None or split.val is not None:
        train_ids, val_ids = _explicit_ids(list(by_id), split)
    else:
        train_ids, val_ids = _kfold_ids(list(by_id), split)
    order = sorted(by_id, key=natural_key)
    train = [by_id[i] for i in order if i in train_ids]
    val = [by_id[i] for i in order if i in val_ids]
    if not val:
        logger.warning("the validation split is empty")
    return train, val


def _explicit_ids(ids: list[str], split: SplitConfig) -> tuple[set[str], set[str]]:
    known = set(ids)
    named = [*(split.train or []), *(split.val or [])]
    unknown = sorted({i for i in named if i not in known}, key=natural_key)
    if unknown:
        sample = sorted(known, key=natural_key)[:10]
        raise DataError(f"data.split names unknown case ids {unknown}; the dataset has ids like {sample}")
    if split.train is not None and split.val is not None:
        overlap = sorted(set(split.train) & set(split.val), key=natural_key)
        if overlap:
            raise DataError(f"data.split lists ids in both train and val: {overlap}")
        return set(split.train), set(split.val)
    if split.val is not None:
        return known - set(split.val), set(split.val)
    return set(split.train or []), known - set(split.train or [])


def _kfold_ids(ids: list[str], split: SplitConfig) -> tuple[set[str], set[str]]:
    if len(ids) < split.folds:
        raise DataError(
            f"{len(ids)} cases cannot fill {split.folds} folds: lower data.split.folds or list data.split.val"
        )
    order = sorted(ids, key=natural_key)
    perm = np.random.default_rng(split.seed).permutation(len(order))
    folds = np.array_split(perm, split.folds)
    val = {order[i] for i in folds[split.fold]}
    return set(order) - val, val
