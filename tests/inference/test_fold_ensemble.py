"""Fold ensembles: mean probabilities as one network, through seg predict, seg export and seg-run."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from seg.cli import main as seg
from seg.engine.fit import fit
from seg.inference.ensemble import FoldEnsemble
from seg_runtime.cli import main as seg_run

from ..conftest import tiny_config


@pytest.mark.parametrize("outputs", ["classes", "regions"])
def test_ensemble_logits_give_back_the_mean_probability(outputs: str) -> None:
    torch.manual_seed(0)
    members = [torch.nn.Conv3d(2, 3, 1) for _ in range(3)]
    x = torch.randn(2, 2, 5, 4, 3)
    with torch.no_grad():
        got = FoldEnsemble(members, outputs)(x)
        act = (lambda t: torch.softmax(t, 1)) if outputs == "classes" else torch.sigmoid
        expected = torch.stack([act(m(x)) for m in members]).mean(0)
    torch.testing.assert_close(act(got), expected, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def cv_folder(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny folds trained with different seeds, laid out as ``seg train --folds`` does."""
    tmp = tmp_path_factory.mktemp("cv")
    runs = {}
    for fold in (0, 1):
        cfg = tiny_config(tmp, 3, "train.epochs=1", f"seed={fold}")
        fit(cfg, run_dir=tmp / "cv" / f"fold_{fold}", progress=False)
        runs[str(fold)] = {"run_dir": f"fold_{fold}", "checkpoint": f"fold_{fold}/last.pt", "val": []}
    (tmp / "cv" / "cv.json").write_text(json.dumps({"name": "demo3d", "folds": 2, "seed": 0, "runs": runs}))
    return tmp / "cv", Path(cfg.data.root) / "imagesTs"


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(folder.glob("*.nii.gz"))}


def test_ensemble_predict_export_and_runtime_agree(cv_folder, tmp_path: Path) -> None:
    cv, images = cv_folder
    assert seg(["predict", "-m", str(cv), "-i", str(images), "-o", str(tmp_path / "ens")]) == 0
    assert seg(["export", str(cv), "-o", str(tmp_path / "bundle")]) == 0
    bundle = json.loads((tmp_path / "bundle" / "model.json").read_text())
    assert bundle["provenance"]["ensemble_folds"] == [0, 1]
    assert seg_run([str(tmp_path / "bundle"), "-i", str(images), "-o", str(tmp_path / "onnx"),
                    "--provider", "cpu"]) == 0
    torch_labels, onnx_labels = _labels(tmp_path / "ens"), _labels(tmp_path / "onnx")
    assert torch_labels and sorted(torch_labels) == sorted(onnx_labels)
    for name, labels in torch_labels.items():
        assert np.mean(labels == onnx_labels[name]) >= 0.999
    # One fold of the ensemble predicts what that fold's run predicts on its own.
    assert seg(["predict", "-m", str(cv), "--folds", "1", "-i", str(images), "-o", str(tmp_path / "one")]) == 0
    assert seg(["predict", "-m", str(cv / "fold_1" / "last.pt"), "-i", str(images), "-o", str(tmp_path / "run")]) == 0
    single, alone = _labels(tmp_path / "one"), _labels(tmp_path / "run")
    for name, labels in alone.items():
        assert np.mean(single[name] == labels) >= 0.999


def test_bad_fold_choices_fail_in_one_line(cv_folder, tmp_path: Path, capsys) -> None:
    cv, images = cv_folder
    for model, folds, expected in ((cv, ["3"], "no fold 3 (folds here: 0, 1)"),
                                   (cv / "fold_0", ["0"], "--folds needs a cross-validation folder")):
        code = seg(["predict", "-m", str(model), "--folds", *folds, "-i", str(images), "-o", str(tmp_path / "x")])
        err = capsys.readouterr().err
        assert code == 2 and expected in err and "Traceback" not in err
