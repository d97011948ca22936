"""``seg plan DATASET``: layout and metadata detected, a runnable config sized to the budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from seg.cli import main
from seg.config import config_from_dict as load_config_dict
from seg.config import load_config
from seg.data.detect import detect_data_config
from seg.data.plan import normalization_for
from seg.data.plan_config import plan_config
from tests.data.test_shared_datasets import BRATS, _need
from tests.raw_datasets import write_nnunet_raw


def test_3d_nnunet_raw_folder_gives_a_3d_config_from_dataset_json(tmp_path: Path, capsys) -> None:
    root = write_nnunet_raw(tmp_path / "Dataset001_Blob", dims=3, channels=2)
    out = tmp_path / "cfg.yaml"
    assert main(["plan", str(root), "-o", str(out), "--device", "cpu", "--time-budget", "2"]) == 0
    table = capsys.readouterr().out
    assert "patch_size" in table and "normalization ADC" in table and "based on" in table
    # Issue 29: the table wraps its text cells to stay within 100 columns (it ran to ~170).
    rows = table.split("config written:")[0].splitlines()
    assert rows[1].startswith("-----") and max(len(line) for line in rows) <= 100
    assert any(line.startswith(" " * 20) for line in rows)  # a wrapped "based on" cell
    cfg = load_config(out)
    assert cfg.data.layout == "nnunet" and cfg.data.spatial_dims == 3 and cfg.data.root == root
    assert cfg.data.channel_names == ["T2", "ADC"] and cfg.data.labels == {"background": 0, "lesion": 1}
    assert len(cfg.train.patch_size) == 3 and len(cfg.data.preprocess.normalization) == 2
    assert cfg.data.preprocess.target_spacing == [1.5, 1.5, 1.5] and cfg.data.split.folds == 4
    assert cfg.infer.tta and "8 passes per patch" in table  # mirroring, nnU-Net's default, says its cost
    # The runs go next to the config (its `output_dir: runs` is relative to the file), and it says where.
    assert cfg.output_dir == tmp_path / "runs" and f"the runs go to {tmp_path / 'runs' / cfg.name}" in table


def test_2d_nnunet_raw_folder_gives_a_2d_config(tmp_path: Path) -> None:
    root = write_nnunet_raw(tmp_path / "Dataset002_Slices", dims=2)
    planned = plan_config(root, device="cpu", time_budget=1)
    cfg = planned.config
    assert cfg["data"]["spatial_dims"] == 2 and cfg["train"]["patch_size"] == [64, 64]
    assert cfg["data"]["preprocess"]["orientation"] is None and cfg["data"]["channel_names"] == ["EM"]
    assert yaml.safe_load(planned.to_yaml()) == cfg


def test_plan_overrides_are_written_into_the_config_and_checked(tmp_path: Path, capsys, monkeypatch) -> None:
    """`seg plan DATASET -o c.yaml k=v` writes the plan with the user's values (as `seg auto` trains it)."""
    root = write_nnunet_raw(tmp_path / "Dataset002_Slices", dims=2)
    out = tmp_path / "cfg.yaml"
    assert main(["plan", str(root), "-o", str(out), "--time-budget", "1", "train.epochs=3", "data.split.folds=2",
                 "seed=7"]) == 0
    assert "set on the command line" in capsys.readouterr().out
    cfg = load_config(out)
    assert (cfg.train.epochs, cfg.data.split.folds, cfg.seed, cfg.data.spatial_dims) == (3, 2, 7, 2)
    assert "train.epochs: 3  (set on the command line)" in out.read_text()
    # a path typed on the command line is relative to the shell, as in seg train
    shell = tmp_path / "shell"
    shell.mkdir()
    monkeypatch.chdir(shell)
    assert main(["plan", str(root), "-o", str(tmp_path / "c2.yaml"), "--time-budget", "1", "output_dir=mine"]) == 0
    assert load_config(tmp_path / "c2.yaml").output_dir == shell / "mine"
    # an unknown key or a wrong type is a one-line error naming the key; nothing is written
    bad = tmp_path / "bad.yaml"
    assert main(["plan", str(root), "-o", str(bad), "--time-budget", "1", "train.epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "train.epoch: unknown key" in err and not bad.exists()
    assert main(["plan", str(root), "-o", str(bad), "--time-budget", "1", "train.epochs=many"]) == 2
    assert "train.epochs" in capsys.readouterr().err and not bad.exists()


def test_2d_data_under_a_3d_config_is_one_line_error_not_indexerror(tmp_path: Path, capsys) -> None:
    root = write_nnunet_raw(tmp_path / "Dataset002_Slices", dims=2)
    config = tmp_path / "three_d.yaml"
    config.write_text(yaml.safe_dump({"data": {"layout": "nnunet", "root": str(root), "channel_names": ["EM"]}}))
    assert main(["plan", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "case0_0000.png" in err and "data.spatial_dims=2" in err


def test_budget_scales_patch_and_schedule(tmp_path: Path) -> None:
    root = write_nnunet_raw(tmp_path / "Dataset003", dims=3, cases=3)
    short = plan_config(root, device="cpu", time_budget=1).config["train"]
    long = plan_config(root, device="cpu", time_budget=30).config["train"]
    assert short["epochs"] * short["iters_per_epoch"] < long["epochs"] * long["iters_per_epoch"]
    gpu = plan_config(root, device="gpu", gpu_memory=40).config
    assert gpu["model"]["size"] == "base" and gpu["train"]["device"] == "auto"
    with pytest.raises(ValueError, match="--time-budget must be positive"):
        plan_config(root, time_budget=0)


def test_msd_4d_images_and_labels_with_gaps_become_a_remap(tmp_path: Path, files) -> None:
    image, label = files.volume((10, 10, 10))
    label[label == 2] = 4
    files.nifti(tmp_path / "imagesTr" / "a.nii.gz", np.stack([image, 2 * image + 5], axis=-1))  # 4D: 2 channels
    files.nifti(tmp_path / "labelsTr" / "a.nii.gz", label)
    files.json(tmp_path / "dataset.json", {"modality": {"0": "FLAIR", "1": "T1w"},
                                           "labels": {"0": "background", "1": "x", "4": "y"},
                                           "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}]})
    data = detect_data_config(tmp_path)
    assert data.layout == "msd" and data.channel_names == ["FLAIR", "T1w"] and data.spatial_dims == 3
    assert data.labels == {"background": 0, "x": 1, "y": 2} and data.label_values == {0: 0, 1: 1, 4: 2}
    planned = plan_config(tmp_path, time_budget=1).config
    assert len(planned["data"]["preprocess"]["normalization"]) == 2
    assert load_config_dict(planned).data.label_values == {0: 0, 1: 1, 4: 2}


def test_already_zscored_case_folders_get_no_second_normalisation(tmp_path: Path, files) -> None:
    rng = np.random.default_rng(0)
    for case in ("p1", "p2"):
        image, label = files.volume((16, 16, 16))
        body = np.zeros_like(image, dtype=bool)
        body[2:14, 2:14, 2:14] = True
        values = rng.normal(size=image.shape).astype(np.float32)
        zscored = np.where(body, (values - values[body].mean()) / values[body].std(), -3.2)
        files.nifti(tmp_path / case / "flair_norm.nii.gz", zscored.astype(np.float32))
        files.nifti(tmp_path / case / "brainmask.nii.gz", body.astype(np.uint8))
        files.nifti(tmp_path / case / "seg.nii.gz", label)
    cfg = plan_config(tmp_path, time_budget=1).config["data"]
    assert cfg["layout"] == "case_folders" and cfg["channel_files"] == ["flair_norm.nii.gz"]
    assert cfg["label_file"] == "seg.nii.gz" and cfg["preprocess"]["normalization"] == [{"scheme": "none"}]
    raw = {"integer_valued": False, "min": 0.0, "zero_fraction": 0.5, "body_mean": 300.0, "body_std": 80.0}
    assert normalization_for("image", raw) == {"scheme": "zscore", "nonzero": True}


def test_unknown_folder_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["plan", str(tmp_path)]) == 2
    assert "cannot tell the layout" in capsys.readouterr().err


@pytest.mark.data
@pytest.mark.slow
def test_shared_brats_folder_is_planned_as_already_normalised(tmp_path: Path) -> None:
    _need(BRATS)
    planned = plan_config(BRATS, time_budget=10)
    data = planned.config["data"]
    assert data["layout"] == "case_folders" and data["channel_names"] == ["Flair", "T1c"]
    assert data["preprocess"]["normalization"] == [{"scheme": "none"}] * 2
    assert data["labels"] == {"background": 0, **{f"class_{v}": v for v in range(1, 5)}}
    # Tumour is 1.7% of the voxels: more foreground-centred patches; the lowres rule gives ~2 mm.
    assert planned.config["train"]["foreground_oversample"] == 0.66
    assert all(1.9 < v < 2.3 for v in data["preprocess"]["target_spacing"])
    rows = {name: why for name, _, why in planned.rows}
    assert "under 5%" in rows["foreground_oversample"] and "3d_lowres" in rows["target_spacing"]
    assert "foreground_sampling" not in planned.config["train"]  # class-first measured: did not pay
    assert rows["foreground_sampling"].startswith("4 foreground classes")


def test_common_foreground_keeps_the_default_oversampling(tmp_path: Path) -> None:
    root = write_nnunet_raw(tmp_path / "Dataset002_Blob", dims=2, cases=4)
    planned = plan_config(root, time_budget=1)
    share = {name: why for name, _, why in planned.rows}["foreground_oversample"]
    assert "foreground_oversample" not in planned.config["train"] and "under" not in share


def test_labels_option_names_the_background_of_an_image_folder(tmp_path: Path, capsys) -> None:
    """ISBI-like folder: 255 = interior (the background here), 0 = membrane (the class of interest)."""
    from PIL import Image

    from seg.config import load_config
    from seg.data.datalist import build_datalist
    from seg.data.transforms import val_transforms

    for sub in ("images", "labels"):
        (tmp_path / "em" / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        label = np.full((40, 40), 255, np.uint8)
        label[:, 10 + i : 14 + i] = 0  # a thin "membrane"
        Image.fromarray(label).save(tmp_path / "em" / "labels" / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(tmp_path / "em" / "images" / f"{i}.png")
    out = tmp_path / "cfg.yaml"
    assert main(["plan", str(tmp_path / "em"), "-o", str(out), "--labels", "interior=255", "membrane=0"]) == 0
    cfg = load_config(out)
    assert cfg.data.labels == {"interior": 0, "membrane": 1}
    assert cfg.data.label_values == {255: 0, 0: 1}
    item = val_transforms(cfg)(build_datalist(cfg.data)[0])
    assert int(item["label"].sum()) == 40 * 4  # the membrane pixels are class 1
    assert main(["plan", str(tmp_path / "em"), "--labels", "a=0", "b=0"]) == 2
    assert "share a file value" in capsys.readouterr().err


def test_overrides_after_labels_are_not_taken_for_classes() -> None:
    """`--labels` takes several values, so it would swallow the overrides that follow it."""
    from seg.cli import parse

    args = parse(["auto", "DATA", "-o", "OUT", "--labels", "interior=255", "membrane=0", "data.split.folds=2",
                  "seed=1", "data.regions={all: [1]}", "--device", "cpu", "train.epochs=3"])
    assert args.labels == [("interior", 255), ("membrane", 0)] and args.device == "cpu"
    assert sorted(args.overrides) == ["data.regions={all: [1]}", "data.split.folds=2", "seed=1", "train.epochs=3"]
    # top-level keys without a dot are overrides too; other names stay classes
    args = parse(["auto", "DATA", "-o", "OUT", "--labels", "background=0", "tumour=1", "name=x", "output_dir=y"])
    assert args.labels == [("background", 0), ("tumour", 1)] and sorted(args.overrides) == ["name=x", "output_dir=y"]


def test_short_budget_trades_batch_for_optimiser_steps() -> None:
    from seg.data.plan_config import BATCH_FLOOR, MIN_STEPS, step_batch

    # 800 patches of 256² (ISBI at 3 min): the memory's batch 8 would give 100 steps; 4 gives 200.
    minutes = 801 * 256**2 / 2.9e5 / 60
    assert step_batch(minutes, 2.9e5, [256, 256], 8) == 800 // MIN_STEPS == 4
    assert step_batch(100 * minutes, 2.9e5, [256, 256], 8) == 8  # a long budget keeps the memory's batch
    assert step_batch(minutes / 100, 2.9e5, [256, 256], 8) == BATCH_FLOOR  # never below the floor
    assert step_batch(minutes / 100, 2.9e5, [256, 256], 1) == 1  # nor above what memory allows


def test_planned_batch_gives_the_steps_and_says_why(tmp_path: Path) -> None:
    root = write_nnunet_raw(tmp_path / "Dataset004", dims=2, cases=3)
    planned = plan_config(root, device="cpu", time_budget=0.05)
    train = planned.config["train"]
    assert train["batch_size"] < 8
    row = next(r for r in planned.rows if r[0] == "batch_size")
    assert row[1] == str(train["batch_size"]) and "optimiser steps" in row[2]
    long = plan_config(root, device="cpu", time_budget=60).config["train"]
    assert long["batch_size"] >= 8


def test_warm_up_is_planned_where_one_epoch_is_a_small_share_of_the_schedule(tmp_path: Path) -> None:
    from seg.engine.optim import lr_factor

    root = write_nnunet_raw(tmp_path / "Dataset005", dims=2, cases=3)
    short = plan_config(root, device="cpu", time_budget=0.05)
    assert short.config["train"]["epochs"] < 5 and "warmup_epochs" not in short.config["train"]
    row = next(r for r in short.rows if r[0] == "warmup_epochs")
    assert row[1] == "0" and "of the schedule" in row[2]
    planned = plan_config(root, device="cpu", time_budget=30)
    train = load_config_dict(planned.config, "plan").train
    assert train.epochs >= 5 and train.warmup_epochs == 1
    steps, warm = train.epochs * train.iters_per_epoch, train.iters_per_epoch
    # the first step runs at 1/warm of the rate, the full rate is reached at the end of the first epoch
    assert lr_factor(0, steps, warm, train.scheduler) == pytest.approx(1 / warm)
    assert lr_factor(warm, steps, warm, train.scheduler) == pytest.approx(1.0)
    assert next(r for r in planned.rows if r[0] == "warmup_epochs")[2].startswith(f"linear LR ramp over the first {warm}")
