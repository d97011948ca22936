"""Issue 29: a model trained on label files in their own values (ISBI: interior 255, membrane 0) predicts
label maps in those values — seg predict, seg export's bundle in seg-run — and seg evaluate scores them
(and class-index maps, by their records) against the references as they are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from seg.cli import main as seg
from seg.config import load_config
from seg.inference.bundle_meta import file_values
from seg_runtime.cli import main as seg_run


def _em_folder(root: Path) -> Path:
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        label = np.full((32, 32), 255, np.uint8)
        label[:, 10 + i : 14 + i] = 0  # a thin "membrane"
        image = np.where(label == 0, 40, 200).astype(np.uint8) + rng.integers(0, 20, (32, 32), dtype=np.uint8)
        Image.fromarray(label).save(root / "labels" / f"{i}.png")
        Image.fromarray(image).save(root / "images" / f"{i}.png")
    return root


def test_file_values_come_from_data_label_values() -> None:
    assert file_values({"interior": 0, "membrane": 1}, {255: 0, 0: 1}) == {"interior": 255, "membrane": 0}
    assert file_values({"background": 0, "x": 1, "y": 2}, {0: 0, 1: 1, 4: 2}) == {"background": 0, "x": 1, "y": 4}
    assert file_values({"background": 0, "x": 1}, {0: 0, 1: 1}) == {}  # the identity: nothing to record
    assert file_values({"background": 0, "x": 1}, None) == {}


def test_predictions_are_written_and_scored_in_the_label_files_values(tmp_path: Path, capsys) -> None:
    data = _em_folder(tmp_path / "em")
    cfg_path = tmp_path / "cfg.yaml"
    assert seg(["plan", str(data), "-o", str(cfg_path), "--labels", "interior=255", "membrane=0",
                "train.epochs=2", "train.iters_per_epoch=3", "train.batch_size=2", "train.patch_size=[32,32]",
                "model.params.channels=[4,8,16]", f"output_dir={tmp_path / 'runs'}", "name=em",
                "infer.tta=false"]) == 0
    cfg = load_config(cfg_path)
    assert seg(["train", str(cfg_path)]) == 0
    run = cfg.output_dir / cfg.name
    pred = tmp_path / "pred"
    assert seg(["predict", "-m", str(run), "-i", str(data / "images"), "-o", str(pred), "--no-progress"]) == 0
    written = np.concatenate([np.asarray(Image.open(pred / f"{i}.png")).ravel() for i in range(4)])
    assert set(np.unique(written)) <= {0, 255} and 255 in written  # the files' values, not 0/1
    assert seg(["export", str(run), "-o", str(tmp_path / "bundle")]) == 0
    meta = json.loads((tmp_path / "bundle" / "model.json").read_text())
    assert meta["label_values"] == {"interior": 255, "membrane": 0}
    assert seg_run(["predict", str(tmp_path / "bundle"), "-i", str(data / "images"), "-o", str(tmp_path / "onnx"),
                    "--provider", "cpu", "--no-progress"]) == 0
    assert seg_run(["predict", str(tmp_path / "bundle"), "-i", str(data / "images"), "-o",
                    str(tmp_path / "indices"), "--provider", "cpu", "--no-progress", "--class-indices"]) == 0
    onnx = np.asarray(Image.open(tmp_path / "onnx" / "0.png"))
    indices = np.asarray(Image.open(tmp_path / "indices" / "0.png"))
    assert np.array_equal(onnx, np.where(indices == 1, 0, 255))
    scores = {}
    for name in ("pred", "onnx", "indices"):
        assert seg(["evaluate", "--pred", str(tmp_path / name), "--ref", str(data / "labels"), "--config",
                    str(cfg_path), "--no-surface"]) == 0
        scores[name] = json.loads((tmp_path / name / "evaluation.json").read_text())["mean"]["dice_membrane"]
    # The same label maps in two encodings score the same; values read as indices would score 0.
    assert scores["onnx"] == scores["indices"] > 0
