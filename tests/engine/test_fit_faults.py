"""Issue 26 classes 7 and 8 (training side): output failures end in one line with the last good state
kept, run names stay inside output_dir, --resume never ignores an override silently, metrics.jsonl is
strict JSON, an empty validation split says so, seg evaluate scores what it can."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from seg.cli import main as seg
from seg.config import ConfigError, config_from_dict
from seg.engine.run_folder import RunFolder

from ..conftest import tiny_config


def _one_line(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert all(n in err for n in needles), err
    return err


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ""])
def test_a_run_name_cannot_leave_output_dir(tmp_path: Path, name: str) -> None:
    data = tiny_config(tmp_path, 3).to_dict()
    with pytest.raises(ConfigError, match="name: .*folder name inside output_dir"):
        config_from_dict({**data, "name": name})


def _config_file(tmp_path: Path, *extra: str) -> Path:
    cfg = tiny_config(tmp_path, 3, "train.epochs=1", *extra)
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(cfg.to_dict()))  # JSON is YAML
    return path


def test_an_output_dir_that_cannot_be_written_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config_file(tmp_path)
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if "runs" in self.parts:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert seg(["train", str(config)]) == 2
    _one_line(capsys, "seg train: error:", "Permission denied", "runs")


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_last_good_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config_file(tmp_path)
    assert seg(["train", str(config)]) == 0
    run = tmp_path / "runs" / "demo3d"
    before = (run / "last.pt").read_bytes()
    capsys.readouterr()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".pt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert seg(["train", str(config), "--resume", "train.epochs=2"]) == 2
    _one_line(capsys, "seg train: error:", "No space left on device")
    assert (run / "last.pt").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.startswith(".tmp-")]


def test_resume_refuses_overrides_it_would_ignore_and_applies_safe_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config_file(tmp_path)
    assert seg(["train", str(config)]) == 0
    capsys.readouterr()
    assert seg(["train", str(config), "--resume", "train.lr=0.5", "model.gate=none"]) == 2
    _one_line(capsys, "--resume continues the run as it was configured", "train.lr: 0.01 -> 0.5",
              "model.gate: 'attention' -> 'none'")
    assert seg(["train", str(config), "--resume", "train.epochs=2", "data.num_workers=0", "train.device=cpu"]) == 0
    stored = json.loads(json.dumps(__import__("yaml").safe_load((tmp_path / "runs" / "demo3d" / "config.yaml")
                                                                .read_text())))
    assert stored["train"]["epochs"] == 2 and stored["data"]["num_workers"] == 0 and stored["train"]["device"] == "cpu"


def test_metrics_are_strict_json(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.log_epoch({"epoch": 1, "train_loss": 0.5, "val_dice_lesion": float("nan"), "val_dice_mean": float("inf")})
    line = (tmp_path / "run" / "metrics.jsonl").read_text().strip()

    def refuse(constant: str) -> None:
        raise AssertionError(f"bare {constant} in metrics.jsonl")

    assert json.loads(line, parse_constant=refuse) == {"epoch": 1, "train_loss": 0.5, "val_dice_lesion": None,
                                                       "val_dice_mean": None}


def test_an_empty_validation_split_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config_file(tmp_path, "data.split.val=[]")
    assert seg(["train", str(config)]) == 0
    out = capsys.readouterr().out
    assert "best val Dice not validated (the validation split is empty)" in out and "inf" not in out
    rows = [json.loads(x) for x in (tmp_path / "runs" / "demo3d" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["val_dice_mean"] is None


def test_evaluate_scores_every_case_it_can(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import nibabel as nib

    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    label = np.zeros((8, 8, 8), np.uint8)
    label[2:6, 2:6, 2:6] = 1
    for case in ("a", "b", "c", "d"):
        nib.save(nib.Nifti1Image(label, np.eye(4)), ref / f"{case}.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), pred / "a.nii.gz")
    nib.save(nib.Nifti1Image(label[:7], np.eye(4)), pred / "b.nii.gz")  # wrong shape
    (pred / "c.nii.gz").write_bytes(b"not a nifti")  # unreadable; d has no prediction
    assert seg(["evaluate", "--pred", str(pred), "--ref", str(ref), "--no-surface"]) == 1
    out = capsys.readouterr().out
    assert "FAILED 3 of 4 cases" in out and "differs from the reference" in out and "no prediction" in out
    result = json.loads((pred / "evaluation.json").read_text())
    assert [c["id"] for c in result["cases"]] == ["a"] and result["mean"]["dice_class_1"] == 1.0
    assert [f["id"] for f in result["failed"]] == ["b", "c", "d"]

