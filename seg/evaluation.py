"""Score a folder of predicted label maps against a folder of references (``seg evaluate``).

Per case and structure (each foreground class, each region): Dice, HD95 (mm) and normalised
surface Dice (NSD) at a tolerance in mm, both on the reference image's voxel spacing; TP / FP / FN
voxel counts; the reference and predicted volumes (ml; 2D label maps: areas in mm²). Over the
cases: mean, std (sample) and median of each, NaN values (a structure absent from both) left out.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from seg.errors import SegError
from seg.metrics import nanstats, overlaps, surface_scores
from seg_runtime.atomic import atomic_open, atomic_write_json
from seg_runtime.formats import image_suffix, strip_image_suffix
from seg_runtime.labelmaps import read_label_map, remap_values
from seg_runtime.naming import DATASET_JSON, read_dataset_json

log = logging.getLogger(__name__)

SCORES = ("dice", "hd95", "nsd")  # what the CV pools and compares; the rest describes the cases
STATISTICS = ("mean", "std", "median")
# Key prefix -> unit (``evaluation.json`` "units"; the volume prefix is ref_ml/pred_ml, 2D ref_mm2/pred_mm2).
UNITS = {"dice": "1", "hd95": "mm", "nsd": "1", "tp": "voxels", "fp": "voxels", "fn": "voxels",
         "ref_ml": "ml", "pred_ml": "ml", "ref_mm2": "mm2", "pred_mm2": "mm2"}


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


def prediction_encodings(pred_dir: Path) -> dict[str, str]:
    """Per case id, how its label map encodes the classes, from the folder's prediction records
    (``settings.label_encoding``: ``dataset_values`` or ``class_indices``); empty without records."""
    from seg_runtime.records import latest_states

    return {cid: str(state.record.get("settings", {}).get("label_encoding", "class_indices"))
            for cid, state in latest_states(pred_dir).items() if state.status == "ok"}


def decode_prediction(pred: np.ndarray, label_values: Mapping[int, int] | None, encoding: str | None) -> np.ndarray:
    """A predicted label map as class indices. seg writes the dataset's own values by default, so with
    ``label_values`` a prediction is decoded like a reference unless its record says ``class_indices``
    (``encoding``: from :func:`prediction_encodings`; None: no record, the references' encoding)."""
    return pred if encoding == "class_indices" or not label_values else remap_values(pred, label_values)


def load_labels_with_spacing(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A label map and its voxel spacing (mm) as stored."""
    arr, geometry = read_label_map(path)
    return arr, tuple(geometry.spacing)


def is_score(key: str) -> bool:
    """Whether a result key is a score (Dice, HD95, NSD) rather than a count or a volume."""
    return key.split("_", 1)[0] in SCORES


def volume_unit(ndim: int) -> tuple[str, float]:
    """The volume unit of a label map and the factor from mm^ndim: ml for 3D, mm2 (an area) for 2D."""
    return ("ml", 1e-3) if ndim >= 3 else ("mm2", 1.0)


def dataset_json_for(ref_dir: Path) -> Path | None:
    """The ``dataset.json`` beside the reference folder or in its parent (nnU-Net / MSD layouts)."""
    for folder in (Path(ref_dir), Path(ref_dir).parent):
        if (folder / DATASET_JSON).is_file():
            return folder / DATASET_JSON
    return None


def labels_from_dataset_json(path: Path) -> tuple[dict[str, int], dict[str, list[int]]] | None:
    """Class name -> value in the files, and regions, from a ``dataset.json``; None when it names no labels.

    Raises:
        DataError: the file is not valid JSON, or its labels are not integers (names the file).
    """
    from seg.data.detect import dataset_json_labels

    meta = read_dataset_json(path.parent)
    if not meta.get("labels"):
        return None
    return dataset_json_labels(meta, path)


def evaluate_folders(pred_dir: Path, ref_dir: Path, labels: Mapping[str, int],
                     regions: Mapping[str, Sequence[int]] | None = None, surface: bool = True,
                     tolerance: float = 1.0, label_values: Mapping[int, int] | None = None,
                     label_source: str = "") -> dict:
    """Score every case present in both folders (see the module docstring for the metrics).

    References with raw values (e.g. ISBI's 0/255) are mapped to class indices through
    ``label_values``, and so are predictions, which seg writes in the dataset's values too, unless the
    folder's records say a case was written as class indices (``--class-indices``). Every case it can score is scored; a reference without a prediction, an
    unreadable file or a prediction of another shape is a failure (``failed``, with its reason),
    never the end of the run.

    Returns ``{"cases": [{"id", <metric>_<structure>: value...}], "mean" | "std" | "median" | "count":
    {<metric>_<structure>: value}, "structures": [names], "labels", "regions", "label_source",
    "units", "nsd_tolerance_mm", "missing": [ids], "failed": [{"id", "error"}], "unknown_labels": {id:
    [raw values]}}``. Metrics per structure: ``dice``, ``hd95``, ``nsd`` (when ``surface``), ``tp``,
    ``fp``, ``fn``, ``ref_ml``, ``pred_ml`` (2D: ``ref_mm2``, ``pred_mm2``). The statistics are over
    the scored cases whose value is not NaN (``count`` of them; std is the sample std).
    ``unknown_labels`` lists, per case, the reference values that are not in the label map
    (``label_values`` keys when given, else ``labels`` values): they count as background, so a wrong
    label map shows here rather than as a silently low Dice.
    """
    preds, refs = label_files(pred_dir), label_files(ref_dir)
    rows, missing = [], sorted(set(refs) - set(preds))
    failed = [{"id": cid, "error": f"{ref_dir / refs[cid].name}: no prediction in {pred_dir}"} for cid in missing]
    known = set(label_values) if label_values else set(labels.values())
    unknown: dict[str, list[int]] = {}
    encodings = prediction_encodings(pred_dir) if label_values else {}
    for cid in sorted(set(preds) & set(refs)):
        try:
            row, extra = _score_case(preds[cid], refs[cid], known, labels, regions, surface, tolerance, label_values,
                                     encodings.get(cid))
        except (SegError, OSError) as exc:
            failed.append({"id": cid, "error": str(exc)})
            log.error("case %s: %s", cid, exc)
            continue
        rows.append({"id": cid, **row})
        if extra:
            unknown[cid] = extra
    keys = [k for k in (rows[0] if rows else {}) if k != "id"]
    stats = {k: nanstats([r[k] for r in rows]) for k in keys}
    if missing:
        log.warning("%d reference cases have no prediction: %s", len(missing), ", ".join(missing[:10]))
    structures = [n for n, i in labels.items() if i != 0] + list(regions or {})
    return {"cases": rows, **{s: {k: v[s] for k, v in stats.items()} for s in (*STATISTICS, "count")},
            "structures": structures, "labels": dict(labels), "regions": {k: list(v) for k, v in (regions or {}).items()},
            "label_source": label_source, "units": UNITS, "nsd_tolerance_mm": tolerance,
            "missing": missing, "failed": sorted(failed, key=lambda f: f["id"]), "unknown_labels": unknown}


def _score_case(pred_path: Path, ref_path: Path, known: set[int], labels: Mapping[str, int],
                regions: Mapping[str, Sequence[int]] | None, surface: bool, tolerance: float,
                label_values: Mapping[int, int] | None,
                encoding: str | None = None) -> tuple[dict[str, float], list[int]]:
    """One case's scores, counts and volumes, and the reference values outside the label map.

    Raises:
        SegError: a file cannot be read, or the prediction's shape differs from the reference's.
    """
    ref, spacing = load_labels_with_spacing(ref_path)
    extra = sorted(int(v) for v in np.unique(ref) if int(v) not in known)
    if label_values:
        ref = remap_values(ref, label_values)
    pred = decode_prediction(load_labels(pred_path), label_values, encoding)
    if pred.shape != ref.shape:
        raise SegError(f"{pred_path}: prediction shape {pred.shape} differs from the reference {ref_path} "
                       f"shape {ref.shape}")
    counts = overlaps(pred, ref, labels, regions)
    scores: dict[str, float] = {f"dice_{k}": c.dice for k, c in counts.items()}
    if surface:
        scores.update(surface_scores(pred, ref, labels, regions, spacing, tolerance))
    unit, factor = volume_unit(ref.ndim)
    voxel = float(np.prod(spacing[: ref.ndim])) * factor
    for name, c in counts.items():
        scores.update({f"tp_{name}": c.tp, f"fp_{name}": c.fp, f"fn_{name}": c.fn,
                       f"ref_{unit}_{name}": c.ref_voxels * voxel, f"pred_{unit}_{name}": c.pred_voxels * voxel})
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
    """Write ``evaluation.csv`` (one row per case, then the rows mean, std and median) and ``evaluation.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / "evaluation.json", out_dir / "evaluation.csv"
    atomic_write_json(json_path, result)
    keys = ["id", *result["mean"].keys()]
    with atomic_open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(result["cases"])
        for stat in STATISTICS:
            writer.writerow({"id": stat, **result.get(stat, {})})
    return csv_path, json_path


# Printed column per metric prefix: header (with its unit) and number format.
_COLUMNS = {"dice": ("Dice", ".4f"), "hd95": ("HD95 mm", ".2f"), "nsd": ("NSD", ".4f"),
            "tp": ("TP", "d"), "fp": ("FP", "d"), "fn": ("FN", "d"),
            "ref_ml": ("ref ml", ".3f"), "pred_ml": ("pred ml", ".3f"),
            "ref_mm2": ("ref mm2", ".1f"), "pred_mm2": ("pred mm2", ".1f")}
_PRINTED = ("dice", "hd95", "nsd", "ref_ml", "pred_ml", "ref_mm2", "pred_mm2")  # TP/FP/FN: in the files


def _metrics(result: dict, printed: Sequence[str]) -> list[str]:
    """The metric prefixes present in the result, in column order."""
    structures = result["structures"]
    return [m for m in printed if any(f"{m}_{s}" in result["mean"] for s in structures)]


def _cell(metric: str, value: float) -> str:
    if value != value:  # NaN: the structure is in neither map (or a surface is missing)
        return "nan"
    return format(int(value) if _COLUMNS[metric][1] == "d" else value, _COLUMNS[metric][1])


def format_evaluation(result: dict) -> str:
    """What ``seg evaluate`` prints: where the label names came from, one row per case and structure,
    then mean, std and median per structure and metric over the cases (TP/FP/FN are in the files)."""
    from seg.table import format_table, wrap_lines

    structures, metrics = result["structures"], _metrics(result, _PRINTED)
    named = ", ".join(f"{n}={v}" for n, v in result["labels"].items() if v != 0)
    regions = "; regions: " + ", ".join(f"{n}={'+'.join(map(str, m))}" for n, m in result["regions"].items())
    source = f" (from {result['label_source']})" if result.get("label_source") else ""
    head = wrap_lines(f"labels: {named}" + (regions if result["regions"] else "") + source)
    headers = [_COLUMNS[m][0] for m in metrics]
    if "nsd" in metrics:
        headers[metrics.index("nsd")] = f"NSD {result.get('nsd_tolerance_mm', 1.0):g} mm"
    cases = [[row["id"] if i == 0 else "", s, *(_cell(m, row[f"{m}_{s}"]) for m in metrics)]
             for row in result["cases"] for i, s in enumerate(structures)]
    summary = [[s if i == 0 else "", headers[i], *(_cell(m, result[stat][f"{m}_{s}"]) for stat in STATISTICS),
                result["count"][f"{m}_{s}"]] for s in structures for i, m in enumerate(metrics)]
    n = len(result["cases"])
    return "\n".join([*head, format_table(["case", "structure", *headers], cases), "",
                      f"over {n} case{'s' * (n != 1)} (NaN left out; std: sample std):",
                      format_table(["structure", "metric", *STATISTICS, "cases"], summary)])
