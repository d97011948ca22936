"""The demo end to end at tiny size: train -> predict -> export -> runtime -> table."""

from __future__ import annotations

from pathlib import Path

import pytest

from seg.cli import main
from seg.evaluation import load_labels
from seg.metrics import dice, nanmean


def test_demo_end_to_end_tiny(tmp_path: Path, capsys) -> None:
    code = main(["demo", "--out", str(tmp_path), "train.epochs=1", "train.iters_per_epoch=4",
                 "model.params.channels=[4,8,16]", "train.val_cases=1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "mean fg Dice torch" in out and "mean fg Dice onnxruntime" in out and "voxel agreement" in out
    # Issue 29: the header says what the number is, and it is that: the mean over the foreground classes.
    assert "mean of the Dice of the foreground classes (lesion, organ)" in " ".join(out.split())
    assert max(len(line) for line in out.splitlines()[:-1]) <= 100
    mean_row = next(line for line in out.splitlines() if line.startswith("mean "))
    agreement = float(mean_row.split()[-1])
    assert agreement >= 0.999
    case = next(line.split() for line in out.splitlines() if line.startswith("synth_"))
    ref = load_labels(tmp_path / "data" / "labelsTs" / f"{case[0]}.nii.gz")
    pred = load_labels(tmp_path / "pred_torch" / f"{case[0]}.nii.gz")
    per_class = [dice(pred == k, ref == k) for k in (1, 2)]
    assert float(case[1]) == pytest.approx(nanmean(per_class), abs=1e-4)
    for sub in ("runs/demo3d/best.pt", "bundle/model.onnx", "bundle/model.json", "pred_torch/predictions.json",
                "pred_onnx/predictions.json"):
        assert (tmp_path / sub).is_file(), sub
