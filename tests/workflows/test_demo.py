"""The demo end to end at tiny size: train -> predict -> export -> runtime -> table."""

from __future__ import annotations

from pathlib import Path

from seg.cli import main


def test_demo_end_to_end_tiny(tmp_path: Path, capsys) -> None:
    code = main(["demo", "--out", str(tmp_path), "train.epochs=1", "train.iters_per_epoch=4",
                 "model.params.channels=[4,8,16]", "train.val_cases=1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "Dice torch" in out and "Dice onnxruntime" in out and "agreement" in out
    mean_row = next(line for line in out.splitlines() if line.startswith("mean"))
    agreement = float(mean_row.split()[-1])
    assert agreement >= 0.999
    for sub in ("runs/demo3d/best.pt", "bundle/model.onnx", "bundle/model.json", "pred_torch/predictions.json",
                "pred_onnx/predictions.json"):
        assert (tmp_path / sub).is_file(), sub
