"""``seg plan DATASET`` -> ``seg train CFG --folds all``: k resumable fold runs, a CV table, reruns redo nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from seg.cli import main
from seg.config import Config, load_config
from seg.config_diff import config_changes
from seg.engine.fit import TrainingError, fit
from seg.workflows.cv import cross_validate, fold_config, parse_folds
from tests.raw_datasets import write_nnunet_raw

# 2 folds of 2 epochs of 2 iterations; validation in the loop only at the end (the CV predicts anyway).
TINY = ["data.split.folds=2", "train.epochs=2", "train.iters_per_epoch=2", "train.batch_size=2", "train.val_every=2"]


def _plan(tmp_path: Path, dims: int) -> Path:
    root = write_nnunet_raw(tmp_path / f"Dataset00{dims}_Blob", dims=dims, cases=4)
    config = tmp_path / "cfg.yaml"
    assert main(["plan", str(root), "-o", str(config), "--device", "cpu", "--time-budget", "1"]) == 0
    return config


def _csv_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as fh:
        return {row["fold"]: row for row in csv.DictReader(fh)}


@pytest.mark.slow
def test_3d_cv_resumes_a_killed_fold_and_a_rerun_retrains_and_repredicts_nothing(tmp_path: Path, capsys) -> None:
    config = _plan(tmp_path, dims=3)
    overrides = [*TINY, "train.patch_size=[16,16,16]", f"output_dir={tmp_path / 'runs'}"]
    cfg = load_config(config, overrides)
    parent = tmp_path / "runs" / cfg.name
    # A fold killed after its first epoch: last.pt holds 1 of 2 epochs.
    fit(fold_config(cfg, 0), run_dir=parent / "fold_0", stop_after=1, progress=False)
    assert main(["train", str(config), "--folds", "all", *overrides]) == 0
    out = capsys.readouterr().out
    assert "resumed" in out and "trained" in out and "pooled" in out and "dice_lesion" in out
    rows = _csv_rows(parent / "cv_results.csv")
    assert set(rows) == {"fold_0", "fold_1", "pooled"} and rows["pooled"]["cases"] == "4"
    assert {"dice_lesion", "hd95_lesion", "nsd_lesion"} <= set(rows["pooled"])
    results = json.loads((parent / "cv_results.json").read_text())
    assert sorted(results["folds"]) == ["0", "1"] and len(results["cases"]) == 4
    for fold in (0, 1):  # each fold validated on its own cases with its own final checkpoint
        epochs = [json.loads(line)["epoch"] for line in (parent / f"fold_{fold}" / "metrics.jsonl").open()]
        assert epochs == [1, 2]
    manifest = json.loads((parent / "cv.json").read_text())
    assert manifest["runs"]["0"]["checkpoint"] == "fold_0/last.pt"
    assert set(manifest["runs"]["0"]["val"]).isdisjoint(manifest["runs"]["1"]["val"])
    post = json.loads((parent / "postprocessing.json").read_text())  # all folds scored: chosen on CV
    assert set(post["evidence"]) == {"lesion"} and post["cases"] == 4
    assert load_config(parent / "config.yaml").infer.keep_largest == post["keep_largest"]
    stamps = {p: p.stat().st_mtime_ns for p in parent.glob("fold_*/last.pt")}
    stamps.update({p: p.stat().st_mtime_ns for p in parent.glob("fold_*/validation/*.nii.gz")})

    # A config's own post-processing is a candidate for the CV, not applied to its raw predictions.
    assert main(["train", str(config), "--folds", "all", *overrides, "infer.keep_largest=[lesion]"]) == 0
    assert capsys.readouterr().out.count("done") == 2
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained, nothing re-predicted
    assert load_config(parent / "config.yaml").infer.keep_largest == post["keep_largest"]
    statuses = json.loads((parent / "fold_1" / "validation" / "predictions.json").read_text())["cases"]
    assert {c["status"] for c in statuses} == {"skipped"}
    assert _csv_rows(parent / "cv_results.csv") == rows

    # Mirroring (planned on) switched off: the validation is predicted again, as the ensemble would
    # now deploy, and post-processing chosen on it; no fold is retrained.
    assert post["tta"] is True
    assert main(["train", str(config), "--folds", "all", *overrides, "infer.tta=false"]) == 0
    capsys.readouterr()
    assert all(p.stat().st_mtime_ns == stamps[p] for p in parent.glob("fold_*/last.pt"))
    assert all(p.stat().st_mtime_ns != stamps[p] for p in parent.glob("fold_*/validation/*.nii.gz"))
    assert json.loads((parent / "postprocessing.json").read_text())["tta"] is False
    assert load_config(parent / "config.yaml").infer.tta is False

    # A fold folder trained with another split or model is refused, not silently reused.
    with pytest.raises(TrainingError, match=r"another config \(data.split.seed: 0 -> 1\)"):
        cross_validate(load_config(config, [*overrides, "data.split.seed=1"]), [0], progress=False)
    capsys.readouterr()
    assert main(["train", str(config), "--folds", "0", *overrides, "model.size=base"]) == 2
    assert "model.size: 'small' -> 'base'" in capsys.readouterr().err


def test_2d_cv_on_a_subset_of_folds(tmp_path: Path, capsys) -> None:
    config = _plan(tmp_path, dims=2)
    overrides = [*TINY, "train.epochs=1", "train.patch_size=[32,32]", f"output_dir={tmp_path / 'runs'}"]
    assert main(["train", str(config), "--folds", "1", *overrides]) == 0
    parent = tmp_path / "runs" / load_config(config).name
    rows = _csv_rows(parent / "cv_results.csv")
    assert set(rows) == {"fold_1", "pooled"} and rows["pooled"]["cases"] == "2"
    assert not (parent / "fold_0").exists() and not (parent / "postprocessing.json").exists()
    # The planned config trains as is, without --folds (a single run on fold 0 of data.split.folds).
    assert main(["train", str(config), *overrides, "name=single"]) == 0
    assert (tmp_path / "runs" / "single" / "last.pt").is_file()
    assert sorted(p.name for p in (parent / "fold_1" / "validation").glob("*.png")) == ["case1.png", "case3.png"]
    # The parent folder moved (another disk, a colleague's copy): the rerun from there finds the fold
    # finished and its validation made by the same checkpoint, so nothing is trained or predicted again.
    stamps = {p.relative_to(parent): p.stat().st_mtime_ns for p in parent.glob("fold_1/validation/*.png")}
    moved = tmp_path / "moved"
    (tmp_path / "runs").rename(moved)
    capsys.readouterr()
    assert main(["train", str(config), "--folds", "1", *overrides[:-1], f"output_dir={moved}"]) == 0
    assert "done" in capsys.readouterr().out
    parent = moved / load_config(config).name
    assert {p.relative_to(parent): p.stat().st_mtime_ns for p in parent.glob("fold_1/validation/*.png")} == stamps
    assert _csv_rows(parent / "cv_results.csv") == rows
    capsys.readouterr()
    assert main(["train", str(config), "--folds", "2", *overrides]) == 2
    assert "folds run from 0 to 1" in capsys.readouterr().err


def test_parse_folds() -> None:
    assert parse_folds(["all"], 3) == [0, 1, 2] and parse_folds(["2", "0"], 3) == [0, 2]
    with pytest.raises(ValueError, match="'all' or fold numbers"):
        parse_folds(["first"], 3)


def test_a_fold_trained_before_a_setting_existed_is_not_another_config() -> None:
    """A checkpoint's config from before ``train.foreground_sampling`` existed trained with its default."""
    current = Config().to_dict()
    older = json.loads(json.dumps(current))
    del older["train"]["foreground_sampling"]
    assert config_changes(older, current) == []
    current["train"]["foreground_sampling"] = "classes"
    assert config_changes(older, current) == ["train.foreground_sampling: 'voxels' -> 'classes'"]
