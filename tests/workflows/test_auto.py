"""seg auto: dataset folder -> plan -> 2-fold CV -> ensemble export -> seg-run agrees with seg predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seg.cli import main as seg
from seg_runtime.cli import main as seg_run
from seg_runtime.io import read_image

from ..raw_datasets import write_nnunet_raw

TINY = ["data.split.folds=2", "train.epochs=1", "train.iters_per_epoch=2", "train.batch_size=2", "train.val_every=1"]


@pytest.mark.parametrize("dims", [3, 2])
def test_auto_plans_cross_validates_and_deploys_an_ensemble(tmp_path: Path, dims: int, capsys,
                                                             monkeypatch) -> None:
    raw = write_nnunet_raw(tmp_path / "Dataset001", dims=dims, cases=4)
    patch = "train.patch_size=[16,16,16]" if dims == 3 else "train.patch_size=[32,32]"
    out = tmp_path / "auto"
    assert seg(["auto", str(raw), "-o", str(out), *TINY, patch, "model.params.channels=[4,8,16]"]) == 0
    for name in ("config.yaml", "plan.txt", "report.md", "curves.png", "cv/cv_results.json", "cv/cv.json",
                 "cv/postprocessing.json", "bundle/model.json", "bundle/model.onnx"):
        assert (out / name).is_file(), name
    bundle = json.loads((out / "bundle" / "model.json").read_text())
    assert bundle["spatial_dims"] == dims and bundle["provenance"]["ensemble_folds"] == [0, 1]
    assert bundle["labels"] == {"background": 0, "lesion": 1}  # from dataset.json
    # Mirroring is planned on: the CV chose post-processing on mirrored predictions, the bundle deploys them.
    assert bundle["tta"] is True and json.loads((out / "cv" / "postprocessing.json").read_text())["tta"] is True
    report = (out / "report.md").read_text()
    assert "pooled" in report and "seg-run" in report

    # The ensemble through seg predict (torch) and through seg-run (the exported bundle) agree.
    images = raw / "imagesTr"
    assert seg(["predict", "-m", str(out / "cv"), "-i", str(images), "-o", str(tmp_path / "torch"),
                "--backend", "torch"]) == 0
    assert seg_run([str(out / "bundle"), "-i", str(images), "-o", str(tmp_path / "onnx"), "--provider", "cpu"]) == 0
    ending = ".nii.gz" if dims == 3 else ".png"
    written = sorted(p.name for p in (tmp_path / "torch").glob(f"*{ending}"))
    assert len(written) == 4
    agree = [np.mean(read_image(tmp_path / "torch" / n)[0] == read_image(tmp_path / "onnx" / n)[0]) for n in written]
    assert min(agree) >= 0.999

    # A rerun, from where the folder was moved to, trains and predicts nothing again (both folds "done",
    # their validation made by the same checkpoints) and re-exports the same ensemble; the first call's
    # overrides are in OUT/config.yaml, so the rerun needs none of them.
    assert "train.epochs: 1  (set on the command line)" in (out / "config.yaml").read_text()
    made = sorted(out.glob("cv/fold_*/last.pt")) + sorted(out.glob(f"cv/fold_*/validation/*{ending}"))
    stamps = {p.relative_to(out): p.stat().st_mtime_ns for p in made}
    out = out.rename(tmp_path / "moved")
    capsys.readouterr()
    assert seg(["auto", str(raw), "-o", str(out)]) == 0
    assert {p: (out / p).stat().st_mtime_ns for p in stamps} == stamps
    assert "deploy bundle" in capsys.readouterr().out
    assert not (tmp_path / "auto").exists()  # nothing (a cache, a run) written where the folder was
    # OUT/config.yaml names OUT as `output_dir: .`, so seg train on it, from any working directory,
    # finds the moved folds too (before, it trained them again at the old place).
    assert "output_dir: ." in (out / "config.yaml").read_text()
    monkeypatch.chdir(raw)
    assert seg(["train", str(out / "config.yaml"), "--folds", "all"]) == 0
    assert {p: (out / p).stat().st_mtime_ns for p in stamps} == stamps
    assert not (tmp_path / "auto").exists() and not (raw / "cv").exists()


def test_auto_on_a_folder_that_is_no_dataset_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert seg(["auto", str(tmp_path / "empty"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seg auto: error:") and "Traceback" not in err
