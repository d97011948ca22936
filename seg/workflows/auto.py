"""``seg auto DATASET -o OUT``: plan, cross-validate, choose post-processing, export the ensemble.

One resumable command from a dataset folder to a deployable model (nnU-Net's bar)::

    OUT/config.yaml   the planned config (kept on reruns: edit it, or delete it to plan again)
    OUT/plan.txt      the statistics behind each planned setting
    OUT/cv/           the k-fold cross-validation (seg.workflows.cv): fold_<i>/, cv_results, postprocessing
    OUT/bundle/       the fold ensemble as one ONNX bundle, with the chosen post-processing (seg-run)
    OUT/curves.png    loss and validation Dice of every fold
    OUT/report.md     the CV table, the post-processing evidence and how to deploy

A rerun continues where a kill stopped: finished folds are kept, a half-trained fold resumes,
scored validations are reused (all verified, see :mod:`seg.workflows.cv`); the bundle is re-exported
from the current checkpoints (atomic, parity-checked).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seg.config import load_config
from seg.engine.curves import plot_curves, read_metrics
from seg.table import format_table
from seg.workflows.cv import CVResult, cross_validate
from seg_runtime.atomic import atomic_write_text

log = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
PLAN_NAME = "plan.txt"


@dataclass
class AutoResult:
    """What ``seg auto`` produced."""

    out: Path
    cv: CVResult
    bundle: Path | None
    report: Path | None


def plan_once(dataset: str | Path, out: Path, *, device: str, gpu_memory: float | None,
              time_budget: float | None, labels: dict[str, int] | None = None,
              overrides: Sequence[str] = ()) -> Path:
    """Write ``OUT/config.yaml`` (and ``plan.txt``), with the overrides in it, unless a config is already there.

    The overrides of the first call are part of the written config, so a rerun without them (or a
    later ``seg train OUT/config.yaml --folds all``) trains the same thing.
    """
    from seg.data.plan_config import plan_config

    config_path = out / CONFIG_NAME
    if config_path.is_file():
        log.info("reusing %s (delete it to plan again)", config_path)
        return config_path
    planned = plan_config(Path(dataset).resolve(), device=device, gpu_memory=gpu_memory,
                          time_budget=time_budget, output_dir=".", labels=labels)
    planned.config["name"] = "cv"
    if overrides:
        planned = planned.with_overrides(list(overrides))
    atomic_write_text(out / PLAN_NAME, format_table(["setting", "value", "based on"], planned.rows) + "\n")
    atomic_write_text(config_path, planned.to_yaml())
    return config_path


def run_auto(dataset: str | Path, out: str | Path, *, device: str = "cpu", gpu_memory: float | None = None,
             time_budget: float | None = None, overrides: Sequence[str] = (), progress: bool = True,
             labels: dict[str, int] | None = None) -> AutoResult:
    """Plan (once), cross-validate every fold, then export the ensemble and write the report.

    Raises:
        DataError: the dataset folder has no recognisable layout or bad cases.
        ConfigError / TrainingError / ExportError: as their steps raise them.
    """
    from seg.export_onnx import export_bundle

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config_path = plan_once(dataset, out, device=device, gpu_memory=gpu_memory, time_budget=time_budget,
                            labels=labels, overrides=overrides)
    # OUT, wherever it is now: config.yaml says `output_dir: .` (itself), but one planned before
    # that was relative named the absolute folder it was planned in, which may have moved.
    cfg = load_config(config_path, [*overrides, f"output_dir={out.resolve()}"])
    cv = cross_validate(cfg, list(range(cfg.data.split.folds)), out / "cv", progress=progress)
    if cv.interrupted:
        return AutoResult(out, cv, None, None)
    export = export_bundle(out / "cv", out / "bundle")
    plot_fold_curves(out / "cv", cv.folds, out / "curves.png")
    report = write_report(out, cv, export.bundle_dir, max(export.max_abs_diff_random, export.max_abs_diff_realistic))
    return AutoResult(out, cv, export.bundle_dir, report)


def cv_rows(table: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Headers and rows of the CV table: one row per metric, one column per fold, then pooled."""
    columns = [*(f"fold_{i}" for i in table["folds"]), "pooled"]
    rows = [[key, *(table["folds"][i].get(key, "") for i in table["folds"]), table["pooled"][key]]
            for key in ["cases", *table["metrics"]]]
    return ["metric", *columns], rows


def postprocessing_rows(post: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Headers and rows of the post-processing evidence (``postprocessing.json``), one per structure."""
    rows = []
    for name, e in post["evidence"].items():
        small = e.get("remove_small") or {}
        best = max(small.items(), key=lambda kv: kv[1]) if small else None
        chosen = e.get("chosen")
        rows.append([name, e["dice_before"], e.get("keep_largest", ""),
                     f"{best[1]:.4f} (< {float(best[0]):.4g})" if best else "",
                     "keep largest" if chosen == "keep_largest" else
                     f"remove < {chosen['remove_small']:.4g}" if isinstance(chosen, dict) else "none"])
    return ["structure", "pooled Dice", "keep largest", "best remove-small (volume)", "chosen"], rows


def write_report(out: Path, cv: CVResult, bundle: Path, parity: float) -> Path:
    """``OUT/report.md``: plan, CV table, post-processing and the deploy command."""
    parts = ["# seg auto report", ""]
    if (out / PLAN_NAME).is_file():
        parts += ["## Plan", "", "```", (out / PLAN_NAME).read_text().rstrip(), "```", ""]
    headers, rows = cv_rows(cv.table)
    parts += ["## Cross-validation", "", "Each fold's final checkpoint on its own validation cases; pooled "
              "over all of them.", "", "```", format_table(headers, rows), "```", ""]
    post = cv.postprocessing or {}
    if post.get("evidence"):
        parts += ["## Post-processing (chosen on the pooled CV Dice)", "", "```",
                  format_table(*postprocessing_rows(post)), "```", ""]
    parts += ["## Deploy", "", f"Bundle: `{bundle}` (the {len(cv.folds)}-fold ensemble as one ONNX graph, "
              f"onnxruntime vs torch max |diff| {parity:.2g}).", "",
              f"    seg-run {bundle} -i SCANS -o LABELS", "", "![curves](curves.png)", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(parts))
    return path


def plot_fold_curves(cv_dir: Path, folds: Sequence[int], path: Path) -> None:
    """Training loss and mean validation Dice against epoch, one line per fold."""
    runs = {f"fold {fold}": read_metrics(cv_dir / f"fold_{fold}" / "metrics.jsonl") for fold in folds}
    plot_curves(path, {label: rows for label, rows in runs.items() if rows}, ["val_dice_mean"])
