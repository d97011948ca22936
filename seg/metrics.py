"""Overlap metrics on label maps: Dice per class and per region (BraTS-style unions of classes).

Label maps are integer arrays of the same shape. A class absent from both prediction and
reference scores NaN (it is left out of means), the convention of MONAI's ``DiceMetric`` with
``ignore_empty=True``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty."""
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    denom = pred.sum() + ref.sum()
    if denom == 0:
        return float("nan")
    return float(2.0 * np.logical_and(pred, ref).sum() / denom)


@dataclass(frozen=True)
class Overlap:
    """Voxel counts of one structure: true positives, false positives, false negatives."""

    tp: int
    fp: int
    fn: int

    @property
    def dice(self) -> float:
        """2 TP / (2 TP + FP + FN); NaN when the structure is in neither map."""
        denom = 2 * self.tp + self.fp + self.fn
        return float(2 * self.tp / denom) if denom else float("nan")

    @property
    def ref_voxels(self) -> int:
        return self.tp + self.fn

    @property
    def pred_voxels(self) -> int:
        return self.tp + self.fp


def overlaps(pred: np.ndarray, ref: np.ndarray, labels: Mapping[str, int],
             regions: Mapping[str, Sequence[int]] | None = None) -> dict[str, Overlap]:
    """TP / FP / FN voxel counts for every foreground class (by name) and every region.

    Args:
        pred: predicted label map [*S].
        ref: reference label map [*S].
        labels: name -> class index; index 0 (background) is skipped.
        regions: name -> list of class indices forming the region.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    out = {}
    for name, (p, r) in _mask_pairs(pred, ref, labels, regions).items():
        tp = int(np.count_nonzero(p & r))
        out[name] = Overlap(tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(r)) - tp)
    return out


def dice_scores(pred: np.ndarray, ref: np.ndarray, labels: Mapping[str, int],
                regions: Mapping[str, Sequence[int]] | None = None) -> dict[str, float]:
    """Dice for every foreground class (by name) and every region (see :func:`overlaps`)."""
    return {name: counts.dice for name, counts in overlaps(pred, ref, labels, regions).items()}


def nanmean(values: Sequence[float]) -> float:
    """Mean over the finite values (NaN when there are none)."""
    arr = np.asarray([v for v in values if v == v], dtype=float)
    return float(arr.mean()) if arr.size else float("nan")


def nanstats(values: Sequence[float]) -> dict[str, float | int]:
    """``mean``, ``std`` (sample, ddof 1: NaN under two values), ``median`` and ``count`` of the
    non-NaN values (NaN statistics when there are none)."""
    arr = np.asarray([v for v in values if v == v], dtype=float)
    nan = float("nan")
    return {"mean": float(arr.mean()) if arr.size else nan,
            "std": float(arr.std(ddof=1)) if arr.size > 1 else nan,
            "median": float(np.median(arr)) if arr.size else nan, "count": int(arr.size)}


def _mask_pairs(pred: np.ndarray, ref: np.ndarray, labels: Mapping[str, int],
                regions: Mapping[str, Sequence[int]] | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    pairs = {name: (pred == idx, ref == idx) for name, idx in labels.items() if idx != 0}
    for name, members in (regions or {}).items():
        pairs[name] = (np.isin(pred, members), np.isin(ref, members))
    return pairs


def surface_scores(pred: np.ndarray, ref: np.ndarray, labels: Mapping[str, int],
                   regions: Mapping[str, Sequence[int]] | None = None,
                   spacing: Sequence[float] | None = None, tolerance: float = 1.0) -> dict[str, float]:
    """HD95 (in mm when ``spacing`` is given) and normalised surface Dice at ``tolerance`` mm.

    Computed by MONAI per class and region. A structure missing from prediction or reference
    scores NaN for both (distances to nothing are undefined).

    Returns:
        ``{"hd95_<name>": ..., "nsd_<name>": ...}``.
    """
    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    out: dict[str, float] = {}
    for name, (p, r) in _mask_pairs(pred, ref, labels, regions).items():
        if not p.any() or not r.any():
            out[f"hd95_{name}"] = out[f"nsd_{name}"] = float("nan")
            continue
        pt = torch.from_numpy(np.stack([~p, p])[None].astype(np.float32))
        rt = torch.from_numpy(np.stack([~r, r])[None].astype(np.float32))
        sp = list(spacing) if spacing is not None else None
        with warnings.catch_warnings():
            # MONAI 1.5+ passes its own deprecated argument to get_mask_edges internally.
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
            out[f"hd95_{name}"] = float(compute_hausdorff_distance(pt, rt, percentile=95, spacing=sp).item())
            out[f"nsd_{name}"] = float(compute_surface_dice(pt, rt, [tolerance], spacing=sp).item())
    return out
