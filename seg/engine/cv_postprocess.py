"""Post-processing chosen on cross-validation (nnU-Net's rule), written beside the CV table.

The structures are every foreground class, every region and ``foreground`` (all classes merged,
nnU-Net's first candidate; only when there are two or more classes). For each, two kinds of step are
tried on the pooled validation predictions of all folds:

- keep its largest connected component;
- remove its components below a minimum volume, at fractions (``SMALL_FRACTIONS``) of the
  structure's typical volume (the median over the validation references that have it). Fractions of
  the smallest reference component would be useless: real label maps have one-voxel specks, so every
  such threshold is below a voxel.

A step is kept only where it raises that structure's pooled Dice by more than ``MIN_GAIN`` and lowers
no other structure's; of a structure's qualifying steps the one with the largest gain wins. The
choice and its evidence go to ``postprocessing.json`` in the CV folder, and ``config.yaml`` there is
the resolved config with ``infer.keep_largest`` / ``infer.remove_small`` set to the choice.

Cost: three passes over the validation cases, one case in memory at a time.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from seg.config import Config, save_config
from seg.data.transforms import remap_labels
from seg.evaluation import label_files, load_labels, load_labels_with_spacing
from seg.metrics import dice_scores, nanmean
from seg_runtime.postprocess import (
    FOREGROUND,
    keep_largest_components,
    postprocess_labels,
    remove_small_components,
    structure_members,
)

log = logging.getLogger(__name__)

POSTPROCESSING_FILE = "postprocessing.json"
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

    Returns:
        The content of ``postprocessing.json``: ``keep_largest`` and ``remove_small`` (the choice),
        ``evidence`` per structure (pooled Dice before, with keep-largest and at each remove-small
        volume, the step chosen and what a rejected step lowered), ``pooled_before`` / ``pooled_after``.
    """
    names = candidates(cfg)
    pairs = _case_pairs(parent, folds)
    thresholds = {n: [f * v for f in SMALL_FRACTIONS] for n, v in _typical_volumes(pairs, names, cfg).items()}
    steps = [(n, "keep_largest", None) for n in names] + [(n, "remove_small", t) for n in thresholds
                                                          for t in thresholds[n]]
    before: dict[str, list[float]] = {n: [] for n in names}
    trial: list[dict[str, list[float]]] = [{m: [] for m in names} for _ in steps]
    for pred, ref, volume in _load(pairs, cfg):
        _add(before, _dice(pred, ref, cfg))
        for store, (name, kind, threshold) in zip(trial, steps, strict=True):
            edited = (keep_largest_components(pred.copy(), [name], cfg.data.labels, cfg.data.regions)
                      if kind == "keep_largest" else
                      remove_small_components(pred.copy(), {name: threshold}, cfg.data.labels, cfg.data.regions,
                                              volume))
            _add(store, _dice(edited, ref, cfg))
    base = {n: nanmean(v) for n, v in before.items()}
    evidence: dict[str, dict[str, Any]] = {n: {"dice_before": base[n], "keep_largest": None, "remove_small": {},
                                              "chosen": None, "lowers": {}} for n in names}
    best: dict[str, tuple[float, str, float | None]] = {}
    for store, (name, kind, threshold) in zip(trial, steps, strict=True):
        after = {m: nanmean(v) for m, v in store.items()}
        harms = [m for m in names if m != name and after[m] < base[m] - MIN_GAIN]
        label = "keep_largest" if kind == "keep_largest" else f"remove_small {threshold:.4g}"
        if kind == "keep_largest":
            evidence[name]["keep_largest"] = after[name]
        else:
            evidence[name]["remove_small"][f"{threshold:.6g}"] = after[name]
        if harms:
            evidence[name]["lowers"][label] = harms
        gain = after[name] - base[name]
        if gain > MIN_GAIN and not harms and gain > best.get(name, (MIN_GAIN, "", None))[0]:
            best[name] = (gain, kind, threshold)
    keep = [n for n in names if n in best and best[n][1] == "keep_largest"]
    small = {n: float(best[n][2]) for n in names if n in best and best[n][1] == "remove_small"}
    for name, (_, kind, threshold) in best.items():
        evidence[name]["chosen"] = "keep_largest" if kind == "keep_largest" else {"remove_small": threshold}
    final: dict[str, list[float]] = {n: [] for n in names}
    for pred, ref, volume in _load(pairs, cfg):
        edited = postprocess_labels(pred, keep, small, cfg.data.labels, cfg.data.regions, volume)
        _add(final, _dice(edited, ref, cfg))
    return {"rule": "per structure, keep its largest component or remove its components smaller than a share of "
                    "its typical volume, where that raises its pooled CV Dice and lowers no other "
                    "structure's (nnU-Net); volumes in mm³ (pixels for images without spacing)",
            "folds": folds, "cases": len(pairs), "keep_largest": keep, "remove_small": small,
            "evidence": evidence, "pooled_before": base, "pooled_after": {n: nanmean(v) for n, v in final.items()}}


def write_postprocessing(parent: Path, cfg: Config, folds: list[int]) -> dict[str, Any]:
    """Choose, then write ``postprocessing.json`` and ``config.yaml`` (``infer`` post-processing set)."""
    choice = choose_postprocessing(parent, cfg, folds)
    tmp = parent / f".{POSTPROCESSING_FILE}.tmp"
    tmp.write_text(json.dumps(choice, indent=2))
    tmp.replace(parent / POSTPROCESSING_FILE)
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
    for pred_path, ref_path in pairs:
        pred, spacing = load_labels_with_spacing(pred_path)
        yield pred.astype(np.int64, copy=False), load_labels(ref_path, cfg.data.label_values), float(np.prod(spacing))


def _typical_volumes(pairs: list[tuple[Path, Path]], names: list[str], cfg: Config) -> dict[str, float]:
    """Per structure, the median volume it has in the validation references that contain it."""
    volumes: dict[str, list[float]] = {n: [] for n in names}
    for _, ref_path in pairs:
        ref, spacing = load_labels_with_spacing(ref_path)
        ref = remap_labels(ref, cfg.data.label_values) if cfg.data.label_values else ref
        for name in names:
            count = int(np.isin(ref, structure_members(name, cfg.data.labels, cfg.data.regions)).sum())
            volumes[name] += [count * float(np.prod(spacing))] if count else []
    return {n: float(np.median(v)) for n, v in volumes.items() if v}


def _dice(pred: np.ndarray, ref: np.ndarray, cfg: Config) -> dict[str, float]:
    """Dice of every class and region, and of ``foreground`` (all classes merged)."""
    merged = {FOREGROUND: structure_members(FOREGROUND, cfg.data.labels, cfg.data.regions)}
    return dice_scores(pred, ref, cfg.data.labels, {**merged, **cfg.data.regions})


def _add(store: dict[str, list[float]], scores: dict[str, float]) -> None:
    for name, values in store.items():
        values.append(scores[name])
