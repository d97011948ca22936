"""k-fold cross-validation as one resumable command (``seg train CONFIG --folds all``).

Layout of the parent folder (``output_dir/name``)::

    cv.json                 folds, split seed, and per fold: run folder, checkpoint, validation ids
    cv_results.csv / .json  Dice / HD95 / NSD per class and region: one row per fold, and pooled
    postprocessing.json     keep-largest per structure chosen on the pooled CV Dice (all folds scored)
    config.yaml             the resolved config with that choice as infer.keep_largest
    fold_<i>/               an ordinary run folder (last.pt, best.pt, metrics.jsonl, ...)
        validation/         the fold's validation cases predicted with fold_<i>/last.pt (mirrored
                            when infer.tta, as the ensemble will deploy),
                            evaluation.csv/json, and validation.json (which checkpoint made them)
        validation_input/   links to the validation images (what ``seg predict`` reads)
        validation_ref/     links to their reference label maps

Each fold is :func:`seg.engine.fit.fit` with ``data.split.fold = i``. A rerun verifies what is on
disk before reusing it: a fold whose ``last.pt`` holds this fold's config (anything but
``train.epochs`` changed is an error) and all its epochs is not retrained,
a shorter one resumes from ``last.pt``, and validation predictions are kept only while the
checkpoint that made them (its SHA-256) is unchanged. The final checkpoint predicts, as in nnU-Net
(``best.pt`` is chosen on the same cases and would flatter the score).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seg.config import Config
from seg.config_diff import config_changes
from seg.data.datalist import DataItem, build_datalist, split_datalist
from seg.engine.checkpoint import load_checkpoint
from seg.engine.fit import TrainingError, default_run_dir, fit
from seg.errors import ConfigError
from seg.evaluation import evaluate_folders, is_score, write_evaluation
from seg.inference.ensemble import CV_MANIFEST
from seg.metrics import nanmean
from seg_runtime.atomic import atomic_open, atomic_write_json
from seg_runtime.formats import image_suffix
from seg_runtime.hashing import sha256_file

log = logging.getLogger(__name__)

VALIDATION_STAMP = "validation.json"


@dataclass
class CVResult:
    """What a cross-validation call did and scored."""

    parent: Path
    folds: list[int]
    trained: dict[int, str] = field(default_factory=dict)  # fold -> "trained" | "resumed" | "done"
    table: dict[str, Any] = field(default_factory=dict)  # {"folds": {i: mean}, "pooled": mean, "cases": n}
    interrupted: bool = False
    postprocessing: dict[str, Any] | None = None  # postprocessing.json, once every fold is scored


def parse_folds(spec: list[str], k: int) -> list[int]:
    """``["all"]`` -> 0..k-1; ``["0", "2"]`` -> [0, 2] (checked against k)."""
    if [s.lower() for s in spec] == ["all"]:
        return list(range(k))
    try:
        folds = sorted({int(s) for s in spec})
    except ValueError:
        raise ConfigError(f"--folds takes 'all' or fold numbers, got {' '.join(spec)}") from None
    bad = [f for f in folds if not 0 <= f < k]
    if bad:
        raise ConfigError(f"--folds {bad}: data.split.folds is {k}, so folds run from 0 to {k - 1}")
    return folds


def fold_config(cfg: Config, fold: int) -> Config:
    """The config of one fold (a copy; only ``data.split.fold`` differs)."""
    out = cfg.model_copy(deep=True)
    out.data.split.fold = fold
    return out


def cross_validate(cfg: Config, folds: list[int], parent: Path | None = None, *, progress: bool = True,
                   device: str = "auto") -> CVResult:
    """Train, predict and score the given folds into ``parent`` (default ``output_dir/name``).

    Raises:
        ValueError: the config lists an explicit split (k-fold needs none).
        TrainingError: a fold folder holds a run of another config (split, model...), or training diverged.
    """
    split = cfg.data.split
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--folds runs in one process; under torchrun train one fold per launch (data.split.fold=i)")
    if split.train is not None or split.val is not None:
        raise ConfigError("--folds needs a k-fold split: remove data.split.train / data.split.val from the config")
    parent = Path(parent or default_run_dir(cfg))
    parent.mkdir(parents=True, exist_ok=True)
    items = build_datalist(cfg.data)
    result = CVResult(parent, folds)
    for fold in folds:
        fcfg = fold_config(cfg, fold)
        run_dir = parent / f"fold_{fold}"
        state, interrupted = train_fold(fcfg, run_dir, progress=progress)
        result.trained[fold] = state
        if interrupted:
            result.interrupted = True
            break
        val = split_datalist(items, fcfg.data.split)[1]
        _write_manifest(parent, cfg, fold, run_dir, val)
        predict_fold(fcfg, run_dir, val, device=device)
    result.table = write_cv_table(parent, cfg)
    scored = sorted(int(i) for i in result.table["folds"])
    if scored == list(range(split.folds)):
        from seg.workflows.postprocessing import write_postprocessing

        result.postprocessing = write_postprocessing(parent, cfg, scored)
    else:
        log.info("post-processing is chosen once all %d folds are scored (have %s)", split.folds, scored)
    return result


def train_fold(cfg: Config, run_dir: Path, progress: bool = True) -> tuple[str, bool]:
    """Train one fold, resume it, or leave it when finished. Returns (what happened, interrupted)."""
    last = run_dir / "last.pt"
    if not last.is_file():
        result = fit(cfg, run_dir=run_dir, progress=progress)
        return "trained", result.interrupted
    ck = load_checkpoint(last)
    changed = config_changes(ck.config_dict, cfg.to_dict())
    if changed:
        raise TrainingError(
            f"{last} was trained with another config ({'; '.join(changed[:3])}); move {run_dir} away or "
            "choose another name= (only train.epochs may grow between runs)")
    finished = ck.training is not None and not ck.training.interrupted_mid_epoch
    if finished and ck.epoch >= cfg.train.epochs:
        log.info("fold %d: finished (%d epochs), not retrained", cfg.data.split.fold, ck.epoch)
        return "done", False
    result = fit(cfg, run_dir=run_dir, resume=True, progress=progress)
    return "resumed", result.interrupted


def predict_fold(cfg: Config, run_dir: Path, val: list[DataItem], device: str = "auto") -> dict[str, Any]:
    """Predict the fold's validation cases with its final checkpoint and score them.

    Predictions made by the same checkpoint (same SHA-256) for the same cases are kept (a rerun
    predicts only what is missing); any other checkpoint clears and redoes them.
    """
    from seg.inference import load_backend
    from seg_runtime.options import PredictOptions
    from seg_runtime.predict import predict_folder

    checkpoint = run_dir / "last.pt"
    pred_dir, stamp_path = run_dir / "validation", run_dir / "validation" / VALIDATION_STAMP
    sha = sha256_file(checkpoint)
    # The checkpoint by its name in the run folder and its hash, not by an absolute path: a moved
    # parent folder keeps its validation (stamps of older versions held the path, hence the pop).
    stamp = {"checkpoint": checkpoint.name, "checkpoint_sha256": sha, "cases": [c["id"] for c in val],
             "postprocessing": "none", "tta": cfg.infer.tta}
    old = json.loads(stamp_path.read_text()) if stamp_path.is_file() else None
    if not (isinstance(old, dict) and {**old, "checkpoint": checkpoint.name} == stamp):
        # Another checkpoint (or split) made what is there: clear it first, so that a kill mid-way
        # leaves only predictions of this checkpoint, which the next run may keep.
        shutil.rmtree(pred_dir, ignore_errors=True)
        atomic_write_json(stamp_path, stamp)
    input_dir, ref_dir = _link_cases(run_dir, val, cfg.data.layout)
    device = "cpu" if cfg.train.device == "cpu" and device == "auto" else device
    # Raw predictions (keep_largest=(): no post-processing): post-processing is what the CV chooses on
    # them (a config's own keep_largest is a candidate like any other, not applied first). Mirroring as
    # this config deploys it (infer.tta; the checkpoint's own setting may be older).
    options = PredictOptions(tta=cfg.infer.tta, keep_largest=(), progress=False)
    manifest = predict_folder(input_dir, pred_dir, load_backend(checkpoint, device=device), options)
    failed = [c["id"] for c in manifest.cases if c["status"] == "failed"]
    if failed:
        raise TrainingError(f"fold {cfg.data.split.fold}: validation prediction failed for {failed}; see "
                            f"{manifest.path}")
    data = cfg.data
    scores = evaluate_folders(pred_dir, ref_dir, data.labels, data.regions, label_values=data.label_values)
    write_evaluation(scores, pred_dir)
    return scores


def _link_cases(run_dir: Path, val: list[DataItem], layout: str) -> tuple[Path, Path]:
    """Folders of symbolic links: the validation images (as ``seg predict`` reads them) and labels."""
    input_dir, ref_dir = run_dir / "validation_input", run_dir / "validation_ref"
    for folder in (input_dir, ref_dir):
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():  # a changed split must not leave other cases behind
            old.unlink()
    for case in val:
        if layout == "case_folders":  # the case folder holds the channel files by name
            _link(input_dir / case["id"], Path(case["image"][0]).parent)
        else:
            for image in case["image"]:
                _link(input_dir / Path(image).name, Path(image))
        if case.get("label"):
            label = Path(case["label"])
            _link(ref_dir / f"{case['id']}{image_suffix(label) or label.suffix}", label)
    return input_dir, ref_dir


def _link(link: Path, target: Path) -> None:
    os.symlink(target.resolve(), link)


def _write_manifest(parent: Path, cfg: Config, fold: int, run_dir: Path, val: list[DataItem]) -> None:
    """``cv.json``: where each fold's model is, for ensembles and for people."""
    path = parent / CV_MANIFEST
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    split = cfg.data.split
    if manifest and (manifest.get("folds"), manifest.get("seed")) != (split.folds, split.seed):
        manifest = {}  # a different split: the old entries describe nothing that is here
    manifest.update(name=cfg.name, folds=split.folds, seed=split.seed)
    manifest.setdefault("runs", {})[str(fold)] = {
        "run_dir": run_dir.name, "checkpoint": f"{run_dir.name}/last.pt", "val": [c["id"] for c in val]}
    atomic_write_json(path, manifest)


def write_cv_table(parent: Path, cfg: Config) -> dict[str, Any]:
    """Per fold and pooled means over every fold whose validation scores are current.

    Pooled is the mean over all validation cases of those folds (nnU-Net's summary), not the mean of
    fold means. Writes ``cv_results.json`` and ``cv_results.csv``.
    """
    folds: dict[str, dict[str, float]] = {}
    cases: list[dict[str, Any]] = []
    for fold in range(cfg.data.split.folds):
        scores = _current_scores(parent / f"fold_{fold}")
        if scores is None:
            continue
        # The scores only: the counts and volumes evaluation.json also holds describe cases, not models.
        folds[str(fold)] = {"cases": len(scores["cases"]), **{k: v for k, v in scores["mean"].items() if is_score(k)}}
        cases += [{"fold": fold, **{k: v for k, v in row.items() if k == "id" or is_score(k)}}
                  for row in scores["cases"]]
    keys = [k for k in (cases[0] if cases else {}) if k not in ("fold", "id")]
    pooled = {"cases": len(cases), **{k: nanmean([c[k] for c in cases]) for k in keys}}
    table = {"metrics": keys, "folds": folds, "pooled": pooled, "cases": cases}
    atomic_write_json(parent / "cv_results.json", table)
    header = ["fold", "cases", *keys]
    with atomic_open(parent / "cv_results.csv", "w") as handle:
        handle.write(",".join(header) + "\n")
        for name, row in [*((f"fold_{i}", r) for i, r in folds.items()), ("pooled", pooled)]:
            handle.write(",".join([name, *(str(row.get(k, "")) for k in header[1:])]) + "\n")
    return table


def _current_scores(run_dir: Path) -> dict[str, Any] | None:
    """The fold's evaluation when it was made by the fold's present last.pt, else None."""
    stamp, scores = run_dir / "validation" / VALIDATION_STAMP, run_dir / "validation" / "evaluation.json"
    last = run_dir / "last.pt"
    if not (stamp.is_file() and scores.is_file() and last.is_file()):
        return None
    if json.loads(stamp.read_text()).get("checkpoint_sha256") != sha256_file(last):
        log.warning("%s: validation scores are from an older checkpoint; rerun --folds to redo them", run_dir)
        return None
    return json.loads(scores.read_text())
