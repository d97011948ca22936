"""Post-processing chosen on cross-validation (nnU-Net's rule), written beside the CV table.

For each foreground class and region, keep-largest-component is tried on the pooled validation
predictions of all folds; it is kept only where it raises that structure's pooled Dice and lowers
no other structure's. The choice and its evidence go to ``postprocessing.json`` in the CV folder,
and ``config.yaml`` there is the resolved config with ``infer.keep_largest`` set to the choice.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from seg.config import Config, save_config
from seg.evaluation import label_files, load_labels
from seg.metrics import dice_scores, nanmean
from seg_runtime.postprocess import keep_largest_components

log = logging.getLogger(__name__)

POSTPROCESSING_FILE = "postprocessing.json"
MIN_GAIN = 1e-4  # a pooled Dice gain below this is noise, not a reason to post-process


def candidates(cfg: Config) -> list[str]:
    """Every foreground class and region name, in label order then region order."""
    labels = cfg.data.labels
    return [n for n, i in sorted(labels.items(), key=lambda kv: kv[1]) if i != 0] + list(cfg.data.regions)


def choose_postprocessing(parent: Path, cfg: Config, folds: list[int]) -> dict[str, Any]:
    """Choose keep-largest per structure on the validation predictions of ``folds``.

    Returns:
        The content of ``postprocessing.json``: ``keep_largest`` (the choice), ``evidence`` per
        structure (pooled Dice before/after and whether kept), ``pooled_before`` / ``pooled_after``.
    """
    names = candidates(cfg)
    pairs = _case_pairs(parent, folds)
    before: dict[str, list[float]] = {n: [] for n in names}
    trial: dict[str, dict[str, list[float]]] = {n: {m: [] for m in names} for n in names}
    for pred, ref in _load(pairs, cfg):
        _add(before, _dice(pred, ref, cfg))
        for name in names:
            _add(trial[name], _dice(_kept(pred, [name], cfg), ref, cfg))
    base = {n: nanmean(v) for n, v in before.items()}
    evidence, chosen = {}, []
    for name in names:
        after = {m: nanmean(v) for m, v in trial[name].items()}
        harms = [m for m in names if m != name and after[m] < base[m] - MIN_GAIN]
        kept = after[name] > base[name] + MIN_GAIN and not harms
        evidence[name] = {"dice_before": base[name], "dice_after": after[name], "kept": kept,
                          "lowers": harms}
        chosen += [name] if kept else []
    final: dict[str, list[float]] = {n: [] for n in names}
    for pred, ref in _load(pairs, cfg):
        _add(final, _dice(_kept(pred, chosen, cfg), ref, cfg))
    return {"rule": "keep the largest component of a structure where that raises its pooled CV Dice and "
                    "lowers no other structure's (nnU-Net)",
            "folds": folds, "cases": len(pairs), "keep_largest": chosen, "evidence": evidence,
            "pooled_before": base, "pooled_after": {n: nanmean(v) for n, v in final.items()}}


def write_postprocessing(parent: Path, cfg: Config, folds: list[int]) -> dict[str, Any]:
    """Choose, then write ``postprocessing.json`` and ``config.yaml`` (``infer.keep_largest`` set)."""
    choice = choose_postprocessing(parent, cfg, folds)
    tmp = parent / f".{POSTPROCESSING_FILE}.tmp"
    tmp.write_text(json.dumps(choice, indent=2))
    tmp.replace(parent / POSTPROCESSING_FILE)
    resolved = cfg.model_copy(deep=True)
    resolved.infer.keep_largest = list(choice["keep_largest"])
    save_config(resolved, parent / "config.yaml")
    log.info("post-processing chosen on CV: keep_largest %s", choice["keep_largest"] or "none")
    return choice


def _case_pairs(parent: Path, folds: list[int]) -> list[tuple[Path, Path]]:
    pairs = []
    for fold in folds:
        preds = label_files(parent / f"fold_{fold}" / "validation")
        refs = label_files(parent / f"fold_{fold}" / "validation_ref")
        pairs += [(preds[c], refs[c]) for c in sorted(set(preds) & set(refs))]
    return pairs


def _load(pairs: list[tuple[Path, Path]], cfg: Config):
    """(prediction, reference) label maps as class indices, one case at a time."""
    for pred_path, ref_path in pairs:
        yield load_labels(pred_path), load_labels(ref_path, cfg.data.label_values)


def _kept(pred: np.ndarray, names: list[str], cfg: Config) -> np.ndarray:
    return keep_largest_components(pred.copy(), names, cfg.data.labels, cfg.data.regions)


def _dice(pred: np.ndarray, ref: np.ndarray, cfg: Config) -> dict[str, float]:
    return dice_scores(pred, ref, cfg.data.labels, cfg.data.regions)


def _add(store: dict[str, list[float]], scores: dict[str, float]) -> None:
    for name, values in store.items():
        values.append(scores[name])
