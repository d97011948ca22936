"""Overlap metrics on label maps: Dice per class and per region (BraTS-style unions of classes).

Label maps are integer arrays of the same shape. A class absent from both prediction and
reference scores NaN (it is left out of means), the convention of MONAI's ``DiceMetric`` with
``ignore_empty=True``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty."""
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    denom = pred.sum() + ref.sum()
    if denom == 0:
        return float("nan")
    return float(2.0 * np.logical_and(pred, ref).sum() / denom)


def dice_scores(pred: np.ndarray, ref: np.ndarray, labels: Mapping[str, int],
                regions: Mapping[str, Sequence[int]] | None = None) -> dict[str, float]:
    """Dice for every foreground class (by name) and every region.

    Args:
        pred: predicted label map [*S].
        ref: reference label map [*S].
        labels: name -> class index; index 0 (background) is skipped.
        regions: name -> list of class indices forming the region.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    out = {name: dice(pred == idx, ref == idx) for name, idx in labels.items() if idx != 0}
    for name, members in (regions or {}).items():
        out[name] = dice(np.isin(pred, members), np.isin(ref, members))
    return out


def nanmean(values: Sequence[float]) -> float:
    """Mean over the finite values (NaN when there are none)."""
    arr = np.asarray([v for v in values if v == v], dtype=float)
    return float(arr.mean()) if arr.size else float("nan")
