"""Post-processing chosen on cross-validation (nnU-Net's rule), written beside the CV table.

The structures are every foreground class, every region and ``foreground`` (all classes merged,
nnU-Net's first candidate; only when there are two or more classes). For each, two kinds of step are
tried on the pooled validation predictions of all folds:

- keep its largest connected component;
- remove its components below a minimum volume, at fractions (``SMALL_FRACTIONS``) of the
  structure's typical volume (the median over the validation references that have it). Fractions of
  the smallest reference component would be useless: real label maps have one-voxel specks, so every
  such threshold is below a voxel.

Structures are taken greedily from coarse to fine (foreground, regions, classes), each step tried on
top of the steps already chosen. A step is kept only where it raises that structure's pooled Dice by
more than ``MIN_GAIN`` and lowers no other structure's; of a structure's qualifying steps the one
with the largest gain wins. The choice and its evidence go to ``postprocessing.json`` in the CV
folder, and ``config.yaml`` there is the resolved config with ``infer.keep_largest`` /
``infer.remove_small`` set to the choice.

Cost: one pass over the validation cases per structure, plus one for the raw scores; one case in
memory at a time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from seg.config import Config, save_config
from seg.evaluation import (
    case_id,
    decode_prediction,
    label_files,
    load_labels,
    load_labels_with_spacing,
    prediction_encodings,
)
from seg.inference.ensemble import POSTPROCESSING
from seg.metrics import dice_scores, nanmean
from seg_runtime.atomic import atomic_write_json
from seg_runtime.postprocess import FOREGROUND, postprocess_labels, structure_members

log = logging.getLogger(__name__)

MIN_GAIN = 1e-4  # a pooled Dice gain below this is noise, not a reason to post-process
SMALL_FRACTIONS = (0.001, 0.005, 0.01, 0.05)  # remove-small thresholds, as shares of the typical volume


def candidates(cfg: Config) -> list[str]:
    """Every foreground class and region name (label order then region order), then ``foreground``."""
    labels = cfg.data.labels
    names = [n for n, i in sorted(labels.items(), key=lambda kv: kv[1]) if i != 0] + list(cfg.data.regions)
    merged = FOREGROUND not in names and len(structure_members(FOREGROUND, labels, cfg.data.regions)) > 1
    return names + ([FOREGROUND] if merged else [])


def choose_postprocessing(parent: Path, cfg: Config, folds: list[int]) -> dict[str, Any]:
    """Choose keep-largest or remove-small per structure on the validation predictions of ``folds``.

    Greedy and in nnU-Net's order, coarse to fine: ``foreground``, then the regions, then the
    classes. Each structure's steps are tried on top of what is chosen so far, applied exactly as
    the bundle will apply them (:func:`postprocess_labels`), so the pooled Dice after the last
    structure is the Dice of the final choice. One pass over the cases per structure, and one
    before them for the raw Dice and the structures' typical volumes.

    Returns:
        The content of ``postprocessing.json``: ``keep_largest`` and ``remove_small`` (the choice),
        ``tta`` (whether the validation predictions it was chosen on were mirrored, which the ensemble
        then deploys),
        ``evidence`` per structure (pooled Dice before its steps, with keep-largest and at each
        remove-small volume, the step chosen and what a rejected step lowered), ``pooled_before`` /
        ``pooled_after``.
    """
    names = candidates(cfg)
    pairs = _case_pairs(parent, folds)
    volumes, base = _raw_pass(pairs, cfg, names)
    thresholds = {n: [f * v for f in SMALL_FRACTIONS] for n, v in volumes.items()}
    keep: list[str] = []
    small: dict[str, float] = {}
    before, evidence = dict(base), {}
    for name in sorted(names, key=lambda n: (n != FOREGROUND, n not in cfg.data.regions)):  # stable: coarse first
        steps = [("keep_largest", None)] + [("remove_small", t) for t in thresholds.get(name, [])]
        choices = [([*keep, name], small) if kind == "keep_largest" else (keep, {**small, name: t}) for kind, t in steps]
        trials = _pooled(pairs, cfg, names, choices)
        record: dict[str, Any] = {"dice_before": base[name], "keep_largest": None, "remove_small": {}, "chosen": None,
                                  "lowers": {}}
        best: tuple[float, int] | None = None
        for index, ((kind, threshold), after) in enumerate(zip(steps, trials, strict=True)):
            if kind == "keep_largest":
                record["keep_largest"] = after[name]
            else:
                record["remove_small"][f"{threshold:.6g}"] = after[name]
            harms = [m for m in names if m != name and after[m] < base[m] - MIN_GAIN]
            if harms:
                record["lowers"][kind if threshold is None else f"remove_small {threshold:.4g}"] = harms
            gain = after[name] - base[name]
            if gain > MIN_GAIN and not harms and (best is None or gain > best[0]):
                best = (gain, index)
        if best is not None:
            kind, threshold = steps[best[1]]
            keep, small = choices[best[1]]
            record["chosen"] = kind if threshold is None else {"remove_small": threshold}
            base = trials[best[1]]
        evidence[name] = record
    return {"rule": "greedy, foreground then regions then classes: per structure, keep its largest component or "
                    "remove its components smaller than a share of its typical volume, on top of the steps chosen "
                    "so far, where that raises its pooled CV Dice and lowers no other structure's (nnU-Net); "
                    "volumes in mm³ (pixels for images without spacing)",
            "folds": folds, "cases": len(pairs), "tta": cfg.infer.tta, "keep_largest": keep, "remove_small": small,
            "evidence": evidence, "pooled_before": before, "pooled_after": base}


def _pooled(pairs: list[tuple[Path, Path]], cfg: Config, names: list[str],
            choices: list[tuple[list[str], dict[str, float]]]) -> list[dict[str, float]]:
    """Pooled Dice of every structure under each (keep_largest, remove_small) choice: one pass over the cases."""
    stores: list[dict[str, list[float]]] = [{n: [] for n in names} for _ in choices]
    for pred, ref, volume in _load(pairs, cfg):
        for store, (keep, small) in zip(stores, choices, strict=True):
            edited = postprocess_labels(pred.copy(), keep, small, cfg.data.labels, cfg.data.regions, volume)
            _add(store, _dice(edited, ref, cfg))
    return [{n: nanmean(v) for n, v in store.items()} for store in stores]


def write_postprocessing(parent: Path, cfg: Config, folds: list[int]) -> dict[str, Any]:
    """Choose, then write ``postprocessing.json`` and ``config.yaml`` (``infer`` post-processing set)."""
    choice = choose_postprocessing(parent, cfg, folds)
    atomic_write_json(parent / POSTPROCESSING, choice)
    resolved = cfg.model_copy(deep=True)
    resolved.infer.keep_largest = list(choice["keep_largest"])
    resolved.infer.remove_small = dict(choice["remove_small"])
    save_config(resolved, parent / "config.yaml")
    log.info("post-processing chosen on CV: keep_largest %s, remove_small %s", choice["keep_largest"] or "none",
             choice["remove_small"] or "none")
    return choice


def _case_pairs(parent: Path, folds: list[int]) -> list[tuple[Path, Path]]:
    pairs = []
    for fold in folds:
        preds = label_files(parent / f"fold_{fold}" / "validation")
        refs = label_files(parent / f"fold_{fold}" / "validation_ref")
        pairs += [(preds[c], refs[c]) for c in sorted(set(preds) & set(refs))]
    return pairs


def _load(pairs: list[tuple[Path, Path]], cfg: Config):
    """(prediction, reference, voxel volume of the prediction) per case, one case at a time."""
    encodings: dict[Path, dict[str, str]] = {}
    for pred_path, ref_path in pairs:
        folder = encodings.setdefault(pred_path.parent, prediction_encodings(pred_path.parent))
        raw, spacing = load_labels_with_spacing(pred_path)
        pred = decode_prediction(raw, cfg.data.label_values, folder.get(case_id(pred_path)))
        yield pred.astype(np.int64, copy=False), load_labels(ref_path, cfg.data.label_values), float(np.prod(spacing))


def _raw_pass(pairs: list[tuple[Path, Path]], cfg: Config,
              names: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """One pass over the raw predictions: per structure, the median volume it has in the validation
    references that contain it, and its pooled Dice before any post-processing."""
    volumes: dict[str, list[float]] = {n: [] for n in names}
    dice: dict[str, list[float]] = {n: [] for n in names}
    for pred, ref, voxel in _load(pairs, cfg):  # predictions are written on the reference's grid
        _add(dice, _dice(pred, ref, cfg))
        for name in names:
            count = int(np.isin(ref, structure_members(name, cfg.data.labels, cfg.data.regions)).sum())
            volumes[name] += [count * voxel] if count else []
    return ({n: float(np.median(v)) for n, v in volumes.items() if v},
            {n: nanmean(v) for n, v in dice.items()})


def _dice(pred: np.ndarray, ref: np.ndarray, cfg: Config) -> dict[str, float]:
    """Dice of every class and region, and of ``foreground`` (all classes merged)."""
    merged = {FOREGROUND: structure_members(FOREGROUND, cfg.data.labels, cfg.data.regions)}
    return dice_scores(pred, ref, cfg.data.labels, {**merged, **cfg.data.regions})


def _add(store: dict[str, list[float]], scores: dict[str, float]) -> None:
    for name, values in store.items():
        values.append(scores[name])
