"""Region-based training end to end: sigmoid region outputs through fit, export, seg predict and seg-run."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from seg.cli import main as seg
from seg.engine.fit import fit
from seg_runtime.cli import main as seg_run
from seg_runtime.outputs import paint_regions

from ..conftest import tiny_config


def test_region_model_trains_exports_and_both_predictors_agree(tmp_path: Path) -> None:
    # Demo labels: lesion 1 inside organ 2. Regions: foreground paints 2, core (= the lesion) paints 1.
    cfg = tiny_config(tmp_path, 3, "train.epochs=1", "model.outputs=regions",
                      "data.regions={foreground: [1, 2], core: [1]}")
    result = fit(cfg, progress=False)
    metrics = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"val_dice_lesion", "val_dice_organ", "val_dice_foreground", "val_dice_core"} <= set(metrics)
    # model selection scores what the network predicts: the regions, not the classes
    assert metrics["val_dice_mean"] == np.mean([metrics["val_dice_foreground"], metrics["val_dice_core"]])
    assert seg(["export", str(result.run_dir), "-o", str(tmp_path / "bundle")]) == 0
    model_json = json.loads((tmp_path / "bundle" / "model.json").read_text())
    assert model_json["outputs"] == "regions"
    images = Path(cfg.data.root) / "imagesTs"
    assert seg(["predict", "--model", str(result.run_dir), "-i", str(images), "-o", str(tmp_path / "torch"),
                "--save-probabilities"]) == 0
    assert seg_run([str(tmp_path / "bundle"), "-i", str(images), "-o", str(tmp_path / "onnx"),
                    "--provider", "cpu"]) == 0
    sources = sorted(images.iterdir())
    assert sources
    for src in sources:
        cid = src.name.replace("_0000.nii.gz", "")
        torch_labels = np.asarray(nib.load(tmp_path / "torch" / f"{cid}.nii.gz").dataobj)
        onnx_labels = np.asarray(nib.load(tmp_path / "onnx" / f"{cid}.nii.gz").dataobj)
        probabilities = np.asarray(nib.load(tmp_path / "torch" / f"{cid}_probabilities.nii.gz").dataobj)
        assert probabilities.shape[-1] == 2  # one channel per region, on the input grid
        assert set(np.unique(torch_labels)) <= {0, 1, 2}
        assert np.mean(torch_labels == onnx_labels) >= 0.999
        painted = paint_regions(np.moveaxis(probabilities, -1, 0), [2, 1])
        assert np.mean(painted == torch_labels) >= 0.999  # labels are the painted sigmoid regions
