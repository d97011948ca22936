"""Score a folder of predicted label maps against a folder of references (``seg evaluate``)."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from seg.errors import SegError
from seg.metrics import dice_scores, nanmean, surface_scores
from seg_runtime.atomic import atomic_open, atomic_write_json
from seg_runtime.formats import image_suffix, strip_image_suffix
from seg_runtime.labelmaps import read_label_map, remap_values

log = logging.getLogger(__name__)


def case_id(path: Path) -> str:
    return strip_image_suffix(path)


def label_files(folder: Path) -> dict[str, Path]:
    """Label maps in a folder by case id (manifests and hidden files are ignored)."""
    return {case_id(p): p for p in sorted(Path(folder).iterdir())
            if p.is_file() and not p.name.startswith(".") and image_suffix(p)}


def load_labels(path: Path, label_values: Mapping[int, int] | None = None) -> np.ndarray:
    """A label map as class indices (raw values remapped through ``label_values`` when given)."""
    arr = load_labels_with_spacing(path)[0]
    return remap_values(arr, label_values) if label_values else arr


def load_labels_with_spacing(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A label map and its voxel spacing (mm) as stored."""
    arr, geometry = read_label_map(path)
    return arr, tuple(geometry.spacing)


def evaluate_folders(pred_dir: Path, ref_dir: Path, labels: Mapping[str, int],
                     regions: Mapping[str, Sequence[int]] | None = None, surface: bool = True,
                     tolerance: float = 1.0, label_values: Mapping[int, int] | None = None) -> dict:
    """Dice (and HD95 / NSD when ``surface``) per class and region for every case present in
    both folders, plus means. Distances use the reference's voxel spacing (mm). References with
    raw values (e.g. ISBI's 0/255) are mapped to class indices through ``label_values``.

    Every case it can score is scored; a reference without a prediction, an unreadable file or a
    prediction of another shape is a failure (``failed``, with its reason), never the end of the run.

    Returns ``{"cases": [{"id", <metric>: value...}], "mean": {<metric>: value}, "missing": [ids],
    "failed": [{"id", "error"}], "unknown_labels": {id: [raw values]}}``; the means are over the scored
    cases; ``unknown_labels`` lists, per case, the reference values that are not in the label map
    (``label_values`` keys when given, else ``labels`` values): they count as background, so a wrong
    label map shows here rather than as a silently low Dice.
    """
    preds, refs = label_files(pred_dir), label_files(ref_dir)
    rows, missing = [], sorted(set(refs) - set(preds))
    failed = [{"id": cid, "error": f"{ref_dir / refs[cid].name}: no prediction in {pred_dir}"} for cid in missing]
    known = set(label_values) if label_values else set(labels.values())
    unknown: dict[str, list[int]] = {}
    for cid in sorted(set(preds) & set(refs)):
        try:
            row, extra = _score_case(preds[cid], refs[cid], known, labels, regions, surface, tolerance, label_values)
        except (SegError, OSError) as exc:
            failed.append({"id": cid, "error": str(exc)})
            log.error("case %s: %s", cid, exc)
            continue
        rows.append({"id": cid, **row})
        if extra:
            unknown[cid] = extra
    keys = [k for k in (rows[0] if rows else {}) if k != "id"]
    mean = {k: nanmean([r[k] for r in rows]) for k in keys}
    if missing:
        log.warning("%d reference cases have no prediction: %s", len(missing), ", ".join(missing[:10]))
    return {"cases": rows, "mean": mean, "missing": missing, "failed": sorted(failed, key=lambda f: f["id"]),
            "unknown_labels": unknown}


def _score_case(pred_path: Path, ref_path: Path, known: set[int], labels: Mapping[str, int],
                regions: Mapping[str, Sequence[int]] | None, surface: bool, tolerance: float,
                label_values: Mapping[int, int] | None) -> tuple[dict[str, float], list[int]]:
    """One case's scores, and the reference values outside the label map.

    Raises:
        SegError: a file cannot be read, or the prediction's shape differs from the reference's.
    """
    ref, spacing = load_labels_with_spacing(ref_path)
    extra = sorted(int(v) for v in np.unique(ref) if int(v) not in known)
    if label_values:
        ref = remap_values(ref, label_values)
    pred = load_labels(pred_path)
    if pred.shape != ref.shape:
        raise SegError(f"{pred_path}: prediction shape {pred.shape} differs from the reference {ref_path} "
                       f"shape {ref.shape}")
    scores = {f"dice_{k}": v for k, v in dice_scores(pred, ref, labels, regions).items()}
    if surface:
        scores.update(surface_scores(pred, ref, labels, regions, spacing, tolerance))
    return scores, extra


def unknown_labels_warning(result: dict) -> str | None:
    """One line naming the reference values outside the label map, or None when there are none."""
    unknown = result.get("unknown_labels") or {}
    if not unknown:
        return None
    values = sorted({v for vals in unknown.values() for v in vals})
    cases = sorted(unknown)
    shown = ", ".join(cases[:5]) + (f" and {len(cases) - 5} more" if len(cases) > 5 else "")
    return (f"WARNING: reference label values {values} are not in the label map (scored as background) "
            f"in {len(cases)} case(s): {shown}")


def write_evaluation(result: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write ``evaluation.csv`` (one row per case + mean) and ``evaluation.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / "evaluation.json", out_dir / "evaluation.csv"
    atomic_write_json(json_path, result)
    keys = ["id", *result["mean"].keys()]
    with atomic_open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(result["cases"])
        writer.writerow({"id": "mean", **result["mean"]})
    return csv_path, json_path
