"""Dataset fingerprint and proposed preprocessing/training settings (``seg plan``).

The fingerprint summarises what the cases are (spacing, shape, intensities, class sizes); the
proposal turns it into config values with nnU-Net's rules of thumb, in the YAML key layout so a
user can paste it into a config::

    data: {preprocess: {orientation, target_spacing, normalization: [...]}}
    train: {patch_size, batch_size}
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from nibabel.orientations import io_orientation
from tqdm import tqdm

from seg.config import DataConfig
from seg.data.check import label_lookup, read_channels
from seg.data.datalist import DataError, DataItem, build_datalist
from seg.errors import ConfigError
from seg_runtime.labelmaps import read_label_map, remap_values
from seg_runtime.naming import DATASET_JSON, dataset_channel_names, read_dataset_json

logger = logging.getLogger(__name__)

SAMPLES_PER_CASE = 10_000  # foreground voxels per case and channel for the intensity statistics (as nnU-Net)
# Voxels per patch and (smallest, largest) batch size, per spatial_dims.
BUDGETS: dict[str, dict[int, tuple[int, int, int]]] = {
    "cpu": {3: (64**3, 2, 4), 2: (256**2, 8, 16)},
    "gpu": {3: (128**3, 2, 8), 2: (512**2, 12, 32)},
}
GPU_REFERENCE_GB = 10.0  # nnU-Net's 3d_fullres default (~128^3, batch 2) fits about this much memory
# A channel whose non-background voxels have |mean| below this and std within STD_RANGE is already z-scored.
NORMALISED_MEAN = 0.25
NORMALISED_STD_RANGE = (0.5, 2.0)
BACKGROUND_SHARE = 0.2  # a value covering this share of a channel's voxels is its constant background
DIVISOR = {3: 16, 2: 32}  # a 4-5 level U-Net halves each axis that many times
ANISO_RATIO = 3.0  # nnU-Net: an axis this much coarser than the others counts as low resolution
# nnU-Net's 3d_lowres rule: when the patch the budget allows covers less than this share of the
# median image, coarsen the target spacing (by SPACING_STEP at a time) until it covers that much.
LOWRES_COVERAGE = 0.25
SPACING_STEP = 1.03
_MRI_NAME = re.compile(r"(mri?|t1|t2|flair|adc|dwi|pd|swi)", re.IGNORECASE)
_CT_NAME = re.compile(r"(^|[^a-z])ct([^a-z]|$)", re.IGNORECASE)


def fingerprint(items: list[DataItem], data: DataConfig) -> dict[str, Any]:
    """Measure a dataset: per case spacing/shape/label counts, per channel foreground intensities.

    Spacing and shape are given in RAS axis order for 3D when ``data.preprocess.orientation`` is
    "RAS", since that is the grid the network sees. Foreground is label > 0 (after
    ``data.label_values``); cases without a label use the nonzero voxels.

    Returns:
        A JSON-able dict: ``spatial_dims``, ``channels`` (names as the dataset calls them),
        ``cases`` [{id, shape, spacing, source_format, label_counts}], ``intensity`` (one entry
        per channel: mean, std, median, p00_5, p99_5, min, max, integer_valued, zero_fraction),
        ``label_counts`` (totals per class name).
    """
    dims = data.spatial_dims
    lookup = label_lookup(data)
    names = {v: k for k, v in data.labels.items()}
    cases, samples, stats = [], [], []
    for index, item in enumerate(tqdm(items, desc="fingerprint", unit="case", disable=None, leave=False)):
        image, geometry = _read_image(item, dims)
        _check_dims(item, geometry, dims)
        label = _read_label(item, dims, lookup)
        spacing, shape = _oriented(geometry, dims, data.preprocess.orientation == "RAS")
        counts = np.bincount(label.ravel(), minlength=len(names)) if label is not None else None
        cases.append(
            {
                "id": item["id"],
                "shape": shape,
                "spacing": spacing,
                "source_format": geometry.source_format,
                "label_counts": {names.get(k, str(k)): int(n) for k, n in enumerate(counts)}
                if counts is not None
                else {},
            }
        )
        mask = label > 0 if label is not None else np.any(image != 0, axis=0)
        rng = np.random.default_rng(index)  # fixed per case: the fingerprint is reproducible
        samples.append([_sample(channel[mask], rng) for channel in image])
        stats.append([_whole_channel_stats(channel) for channel in image])
    totals: dict[str, int] = {}
    for case in cases:
        for name, n in case["label_counts"].items():
            totals[name] = totals.get(name, 0) + n
    return {
        "spatial_dims": dims,
        "channels": _channel_names(data, len(samples[0]) if samples else 0),
        "cases": cases,
        "intensity": _intensity_summary(samples, stats),
        "label_counts": totals,
    }


def _read_image(item: DataItem, dims: int) -> tuple[np.ndarray, Any]:
    arrays, geometry = [], None
    for path in item["image"]:
        array, geo = read_channels(path, dims)
        arrays.append(array.astype(np.float32, copy=False))
        geometry = geometry or geo
    return np.concatenate(arrays), geometry


def _check_dims(item: DataItem, geometry: Any, dims: int) -> None:
    """A 2D image under a 3D config (or the reverse) is a user error, not an IndexError later."""
    shape = tuple(geometry.shape)
    if len(shape) == dims or (dims == 2 and shape[2:] == (1,)):
        return
    raise DataError(
        f"{item['image'][0]}: the image is {len(shape)}D (shape {list(shape)}) but data.spatial_dims is "
        f"{dims}; set data.spatial_dims={len(shape) if len(shape) in (2, 3) else dims}"
    )


def _read_label(item: DataItem, dims: int, lookup: dict[int, int]) -> np.ndarray | None:
    if item.get("label") is None:
        return None
    # Values outside the map were reported by check_datalist; here they count as background.
    return remap_values(read_label_map(item["label"], dims)[0], lookup).astype(np.int64)


def _oriented(geometry: Any, dims: int, ras: bool) -> tuple[list[float], list[int]]:
    spacing = [float(s) for s in geometry.spacing[:dims]]
    shape = [int(s) for s in geometry.shape[:dims]]
    if dims == 3 and ras:
        # io_orientation gives, per voxel axis, the world axis it runs along after reorientation.
        axes = io_orientation(geometry.affine)[:, 0].astype(int)
        spacing = [spacing[int(np.where(axes == w)[0][0])] for w in range(3)]
        shape = [shape[int(np.where(axes == w)[0][0])] for w in range(3)]
    return spacing, shape


def _sample(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if values.size <= SAMPLES_PER_CASE:
        return values.astype(np.float64)
    return rng.choice(values, SAMPLES_PER_CASE, replace=False).astype(np.float64)


def _whole_channel_stats(channel: np.ndarray) -> tuple[float, float, bool, float, float, float, float]:
    """min, max, integer-valued, zero share, constant-background share, mean and std off the background.

    The background is the most frequent value when it covers at least ``BACKGROUND_SHARE`` of the
    voxels (0 after skull stripping, or the z-score of 0 when the scan was normalised afterwards).
    """
    finite = channel[np.isfinite(channel)]
    integer = bool(np.all(finite == np.round(finite)))
    values, counts = np.unique(finite, return_counts=True)
    top = int(np.argmax(counts))
    share = float(counts[top] / finite.size)
    body = finite[finite != values[top]] if BACKGROUND_SHARE <= share < 1.0 else finite
    return (float(finite.min()), float(finite.max()), integer, float(np.mean(finite == 0)), share,
            float(body.mean()), float(body.std()))


def _intensity_summary(samples: list[list[np.ndarray]], stats: list[list[tuple]]) -> list[dict[str, Any]]:
    summary = []
    for c in range(len(samples[0]) if samples else 0):
        values = np.concatenate([case[c] for case in samples])
        values = values[np.isfinite(values)]
        if values.size == 0:  # no foreground anywhere: fall back to a neutral summary
            values = np.zeros(1)
        p_lo, median, p_hi = np.percentile(values, [0.5, 50.0, 99.5])
        summary.append(
            {
                "mean": float(values.mean()),
                "std": float(values.std()),
                "median": float(median),
                "p00_5": float(p_lo),
                "p99_5": float(p_hi),
                "min": min(s[c][0] for s in stats),
                "max": max(s[c][1] for s in stats),
                "integer_valued": all(s[c][2] for s in stats),
                "zero_fraction": float(np.mean([s[c][3] for s in stats])),
                "background_fraction": float(np.mean([s[c][4] for s in stats])),
                "body_mean": float(np.mean([s[c][5] for s in stats])),
                "body_std": float(np.mean([s[c][6] for s in stats])),
            }
        )
    return summary


def _channel_names(data: DataConfig, count: int) -> list[str]:
    """Modality names as dataset.json states them (nnU-Net ``channel_names``, MSD ``modality``)."""
    root = Path(data.root or ".")
    names: dict[str, str] = {}
    if data.layout in ("nnunet", "msd", "synthetic") and (root / DATASET_JSON).is_file():
        try:
            names = dataset_channel_names(read_dataset_json(root))
        except DataError:
            logger.warning("cannot read channel names from %s", root / DATASET_JSON)
    fallback = list(data.channel_names) + [f"channel{c}" for c in range(len(data.channel_names), count)]
    return [names.get(str(c), fallback[c]) for c in range(count)]


# --------------------------------------------------------------------------------------------------
# Proposal


def voxel_budget(memory_budget: str, dims: int, gpu_memory: float | None = None) -> tuple[int, int, int]:
    """(voxels per patch, smallest batch, largest batch) for a device, scaled by GPU memory when given.

    The GPU budget grows linearly with memory from nnU-Net's ~10 GB reference (128³ voxels),
    between a quarter and four times that.
    """
    if memory_budget not in BUDGETS:
        raise ConfigError(f"memory_budget must be one of {sorted(BUDGETS)}, got {memory_budget!r}")
    voxels, batch_min, batch_max = BUDGETS[memory_budget][dims]
    if memory_budget == "gpu" and gpu_memory is not None:
        if gpu_memory <= 0:
            raise ConfigError(f"--gpu-memory must be positive (GB), got {gpu_memory}")
        voxels = int(voxels * float(np.clip(gpu_memory / GPU_REFERENCE_GB, 0.25, 4.0)))
    return voxels, batch_min, batch_max


def propose_settings(
    fp: dict[str, Any], data: DataConfig, *, memory_budget: str = "cpu", gpu_memory: float | None = None
) -> dict[str, Any]:
    """Turn a fingerprint into config values (nnU-Net's rules, scaled to a memory budget).

    Args:
        fp: from :func:`fingerprint`.
        data: the data section (only its layout-independent settings are read).
        memory_budget: "cpu" (patch ≤ 64³ / 256² voxels) or "gpu" (≤ 128³ / 512²).
        gpu_memory: GB of GPU memory; scales the "gpu" budget (see :func:`voxel_budget`).

    Returns:
        ``{"data": {"preprocess": {...}}, "train": {"patch_size": [...], "batch_size": int}}``.
    """
    dims = int(fp["spatial_dims"])
    budget, batch_min, batch_max = voxel_budget(memory_budget, dims, gpu_memory)
    if not fp["cases"]:
        raise ConfigError("the fingerprint holds no cases")
    spacings = np.array([c["spacing"] for c in fp["cases"]], dtype=np.float64)
    shapes = np.array([c["shape"] for c in fp["cases"]], dtype=np.float64)
    raster = all(c["source_format"] in ("png", "tiff") for c in fp["cases"])
    full = target_spacing(spacings, shapes)
    target = full if raster or dims == 2 else lowres_spacing(full, spacings, shapes, budget, DIVISOR[dims])
    median_shape = np.median(shapes * spacings / target, axis=0)
    patch = patch_size(median_shape, target, budget, DIVISOR[dims])
    batch = int(np.clip(batch_min * budget // int(np.prod(patch)), batch_min, batch_max))
    normalization = [
        normalization_for(name, stats) for name, stats in zip(fp["channels"], fp["intensity"], strict=True)
    ]
    preprocess = {
        "orientation": "RAS" if dims == 3 else None,
        # Raster images carry no physical spacing: keep their pixel grid.
        "target_spacing": None if raster else [_round(s) for s in target],
        "normalization": normalization,
    }
    coverage = float(np.prod(patch) / max(np.prod(median_shape), 1.0))
    return {"data": {"preprocess": preprocess}, "train": {"patch_size": patch, "batch_size": batch},
            "stats": {"full_resolution_spacing": [_round(s) for s in full], "median_shape": [int(round(s)) for s in median_shape],
                      "patch_coverage": coverage, "lowres": bool(np.any(target > full * (1 + 1e-6)))}}


def target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """Median spacing; a clearly low-resolution axis takes the 10th percentile instead (nnU-Net).

    Args:
        spacings: per case voxel size. Shape: [N, D].
        shapes: per case voxel counts. Shape: [N, D].
    """
    target = np.median(spacings, axis=0)
    if spacings.shape[1] < 3:
        return target
    size = np.median(shapes * spacings / target, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(len(target)) if i != worst]
    aniso_spacing = target[worst] > ANISO_RATIO * max(target[others])
    aniso_voxels = size[worst] * ANISO_RATIO < min(size[others])
    if aniso_spacing and aniso_voxels:
        # Resampling thick slices to the median would invent data; a finer percentile keeps detail.
        low = float(np.percentile(spacings[:, worst], 10))
        target[worst] = max(low, max(target[others]) + 1e-5)
    return target


def lowres_spacing(spacing: np.ndarray, spacings: np.ndarray, shapes: np.ndarray, voxel_budget: int,
                   divisor: int) -> np.ndarray:
    """Coarsen ``spacing`` until the budget's patch covers ``LOWRES_COVERAGE`` of the median image.

    nnU-Net's 3d_lowres configuration, for a budget that cannot see enough of a case at full
    resolution (a CPU, a small GPU): the finer axes grow by ``SPACING_STEP`` until they reach the
    coarsest, then all axes together, so the grid drifts towards isotropic. Left unchanged when
    the full-resolution patch already covers enough.

    Args:
        spacing: the full-resolution target spacing. Shape: [D].
        spacings: per case voxel size. Shape: [N, D].
        shapes: per case voxel counts. Shape: [N, D].
    """
    extent = np.median(shapes * spacings, axis=0)  # the median image in mm
    target = np.asarray(spacing, dtype=np.float64).copy()
    for _ in range(200):  # 1.03^200 = 370x: far past any real case
        median_shape = extent / target
        patch = patch_size(median_shape, target, voxel_budget, divisor)
        if np.prod(patch) >= LOWRES_COVERAGE * np.prod(median_shape) or np.all(median_shape <= divisor):
            break
        finer = target < target.max() / SPACING_STEP
        target = np.where(finer, target * SPACING_STEP, target) if finer.any() else target * SPACING_STEP
    return target


def patch_size(median_shape: np.ndarray, spacing: np.ndarray, voxel_budget: int, divisor: int) -> list[int]:
    """The median image, rounded to multiples of ``divisor``, shrunk until it fits the voxel budget.

    The axis with the largest physical extent shrinks first, so patches stay roughly isotropic in mm.
    """
    patch = [max(divisor, int(round(s / divisor)) * divisor) for s in median_shape]
    while int(np.prod(patch)) > voxel_budget:
        extents = [p * s if p > divisor else -1.0 for p, s in zip(patch, spacing, strict=True)]
        axis = int(np.argmax(extents))
        if extents[axis] < 0:
            break  # every axis is at its minimum
        patch[axis] -= divisor
    return patch


def normalization_for(name: str, stats: dict[str, Any]) -> dict[str, Any]:
    """CT-like channels get fixed clipping and global foreground statistics; others z-score.

    A channel that is already z-scored (its voxels off a constant background, or all of them, have
    mean ~0 and std ~1, as in the BraTS DeepMedic release) gets ``none``: a second z-score inside a
    mask the runtime cannot reproduce would shift it.

    A channel is CT-like when its name says CT or it is integer-valued with a minimum near -1024 HU.
    MRI-like channels (by name, or with at least 20% exact zeros, as after skull stripping) z-score
    over nonzero voxels only, so the empty background does not dilute the statistics.
    """
    ct = bool(_CT_NAME.search(name)) or (stats["integer_valued"] and stats["min"] <= -1000)
    if ct:
        return {
            "scheme": "fixed",
            "clip": [_round(stats["p00_5"]), _round(stats["p99_5"])],
            "mean": _round(stats["mean"]),
            "std": _round(max(stats["std"], 1e-8)),
        }
    if is_normalised(stats):
        return {"scheme": "none"}
    nonzero = bool(_MRI_NAME.search(name)) or stats["zero_fraction"] >= 0.2
    return {"scheme": "zscore", "nonzero": nonzero}


def is_normalised(stats: dict[str, Any]) -> bool:
    """Whether a channel's statistics say it is z-scored already (see :func:`normalization_for`)."""
    if "body_mean" not in stats or stats["integer_valued"]:
        return False
    lo, hi = NORMALISED_STD_RANGE
    return abs(stats["body_mean"]) < NORMALISED_MEAN and lo <= stats["body_std"] <= hi


def _round(value: float) -> float:
    return float(f"{float(value):.4g}")


def plan_dataset(data: DataConfig, *, memory_budget: str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """Discover, fingerprint and propose in one call.

    Returns:
        (plan, fingerprint).
    """
    fp = fingerprint(build_datalist(data), data)
    return propose_settings(fp, data, memory_budget=memory_budget), fp


def plan_to_yaml(plan: dict[str, Any], fp: dict[str, Any] | None = None) -> str:
    """The plan as YAML with a comment header (dataset summary when the fingerprint is given)."""
    lines = ["# Proposed by `seg plan`: paste into your experiment config and adjust."]
    if fp is not None and fp["cases"]:
        spacing = np.median([c["spacing"] for c in fp["cases"]], axis=0)
        shape = np.median([c["shape"] for c in fp["cases"]], axis=0)
        lines.append(
            f"# {len(fp['cases'])} cases; median shape {[int(s) for s in shape]}, "
            f"median spacing {[_round(s) for s in spacing]}; channels {fp['channels']}"
        )
        if fp["label_counts"]:
            total = max(sum(fp["label_counts"].values()), 1)
            share = ", ".join(f"{k} {100 * v / total:.2g}%" for k, v in fp["label_counts"].items())
            lines.append(f"# voxels per class: {share}")
    stats = plan.get("stats")
    if stats and stats["lowres"]:
        lines.append(f"# target spacing coarsened from {stats['full_resolution_spacing']} so the patch covers "
                     f"{100 * stats['patch_coverage']:.0f}% of the median image (nnU-Net's 3d_lowres rule)")
    body = yaml.safe_dump({k: v for k, v in plan.items() if k != "stats"}, sort_keys=False, default_flow_style=None)
    return "\n".join(lines) + "\n" + body
