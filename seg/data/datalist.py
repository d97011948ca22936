"""Dataset layouts → case lists, train/validation splits, and the pre-training data check.

A case is a plain dict, the currency of the MONAI dictionary pipelines::

    {"id": "pat0003", "image": ["/abs/flair.nii.gz", "/abs/t1c.nii.gz"], "label": "/abs/seg.nii.gz"}

``image`` holds one path per channel file, in channel order; ``label`` is None when the layout has
no label for the case. Paths are absolute strings. Discovery only lists files; it never opens them,
so it is fast and a broken file surfaces in :func:`check_datalist` with every other problem.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from seg.config import DataConfig, SplitConfig
from seg.data.synthetic import make_synthetic_dataset
from seg.errors import SegError
from seg_runtime.formats import RASTER_SUFFIXES, strip_image_suffix
from seg_runtime.geometry import CaseError, Geometry
from seg_runtime.io import read_image

logger = logging.getLogger(__name__)

Case = dict[str, Any]
Subset = Literal["train", "test"]
IMAGE_2D_SUFFIXES = RASTER_SUFFIXES  # the runtime's one suffix table (seg_runtime.formats)


class DataError(SegError, ValueError):
    """A dataset that cannot be used; the message lists every bad case with its problem."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


def natural_key(text: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that orders digit runs by value: "2" before "10", "case2" before "case10"."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text) if p)


# --------------------------------------------------------------------------------------------------
# Discovery


def build_datalist(data: DataConfig, subset: Subset = "train") -> list[Case]:
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


def _case(case_id: str, images: list[Path], label: Path | None) -> Case:
    return {"id": case_id, "image": [str(p) for p in images], "label": None if label is None else str(label)}


def _read_dataset_json(root: Path) -> dict[str, Any]:
    path = root / "dataset.json"
    if not path.is_file():
        raise DataError(f"{path} not found: this layout needs its dataset.json")
    try:
        meta = json.loads(path.read_text())
    except ValueError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object at the top level")
    return meta


def _nnunet_cases(root: Path, data: DataConfig, subset: Subset) -> list[Case]:
    meta = _read_dataset_json(root)
    ending = str(meta.get("file_ending", ".nii.gz"))
    images_dir = root / ("imagesTr" if subset == "train" else "imagesTs")
    labels_dir = root / ("labelsTr" if subset == "train" else "labelsTs")
    if not images_dir.is_dir():
        raise DataError(f"{images_dir} not found (nnU-Net raw layout needs imagesTr/ and labelsTr/)")
    pattern = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})" + re.escape(ending) + "$")
    found: dict[str, set[int]] = {}
    for path in images_dir.iterdir():
        match = pattern.match(path.name)
        if match is None:
            if not path.name.startswith("."):
                logger.warning("ignoring %s: not named CASE_XXXX%s", path, ending)
            continue
        found.setdefault(match["case"], set()).add(int(match["channel"]))
    declared = len(meta.get("channel_names", meta.get("modality", {})))
    # Expected paths for every declared channel: a missing one is reported by check_datalist.
    return [
        _case(
            case,
            [images_dir / f"{case}_{c:04d}{ending}" for c in range(max(declared, max(channels) + 1))],
            labels_dir / f"{case}{ending}" if labels_dir.is_dir() else None,
        )
        for case, channels in found.items()
    ]


def _case_id(path: Path) -> str:
    return strip_image_suffix(path)


def _msd_cases(root: Path, data: DataConfig, subset: Subset) -> list[Case]:
    meta = _read_dataset_json(root)
    key = "training" if subset == "train" else "test"
    entries = meta.get(key)
    if not isinstance(entries, list):
        raise DataError(f"{root / 'dataset.json'} has no {key!r} list (MSD layout)")
    items = []
    for entry in entries:
        image = entry.get("image") if isinstance(entry, dict) else entry  # MSD "test" lists bare paths
        if not isinstance(image, str):
            raise DataError(f"{root / 'dataset.json'}: {key} entry {entry!r} has no image path")
        label = entry.get("label") if isinstance(entry, dict) else None
        image_path = (root / image).resolve()
        items.append(_case(_case_id(image_path), [image_path], (root / label).resolve() if label else None))
    return items


def _case_folder_cases(root: Path, data: DataConfig, subset: Subset) -> list[Case]:
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


def _image_folder_cases(root: Path, data: DataConfig, subset: Subset) -> list[Case]:
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


def split_datalist(items: list[Case], split: SplitConfig) -> tuple[list[Case], list[Case]]:
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


# --------------------------------------------------------------------------------------------------
# Reading and checking


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


def check_datalist(items: list[Case], data: DataConfig, record: Any = None) -> None:
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


def _case_problems(item: Case, data: DataConfig, lookup: dict[int, int]) -> list[str]:
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
