"""Issue 26: a generated corpus of 60+ malformed inputs, mixed with good cases, through both tools.

Every bad case gets one line naming its file and problem, no traceback, the good cases come out
voxel-identical to a clean run of them alone, nothing partial is left, and the exit code is 1 (some
case failed) as the README says.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from malformed_corpus import write_corpus, write_good

from seg_runtime.atomic import TEMP_PREFIX
from seg_runtime.cli import main as seg_run
from seg_runtime.io import read_image
from seg_runtime.preprocess import PreprocessSpec

SPEC = PreprocessSpec(orientation="RAS", target_spacing=[1.0, 1.0, 1.0], normalization=[{"scheme": "none"}])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str], list[str]]:
    root = tmp_path_factory.mktemp("corpus")
    good = write_good(root / "clean")
    write_good(root / "mixed")
    expected = write_corpus(root / "mixed")
    return root / "clean", root / "mixed", expected, good


def _checkpoint(tmp: Path) -> Path:
    import torch

    from seg.engine.checkpoint import Checkpoint, save_checkpoint
    from seg.models import create_model
    from tests.conftest import tiny_config

    cfg = tiny_config(tmp, 3, "data.preprocess.target_spacing=[1.0,1.0,1.0]", "train.patch_size=[16,16,16]",
                      "model.deep_supervision=false")
    torch.manual_seed(0)
    return save_checkpoint(Checkpoint(tmp / "model.pt", cfg.to_dict(), create_model(cfg).state_dict()))


def _check(out: Path, clean: Path, expected: dict[str, str], good: list[str], mixed: Path, err: str) -> None:
    assert "Traceback" not in err
    cases = {c["id"]: c for c in json.loads((out / "predictions.json").read_text())["cases"]}
    # "dup": of dup.nii.gz and dup.nrrd the first is the case, the second a failure under its own name
    assert {k for k, v in cases.items() if v["status"] == "ok"} == {*good, "dup"}
    for case_id, phrase in expected.items():
        record = cases[case_id]
        error = record["error"] or ""
        assert record["status"] == "failed" and "\n" not in error, (case_id, error)
        assert phrase in error, (case_id, phrase, error)
        names = {case_id, *(Path(p).name for p in record["inputs"])}
        assert any(name in error for name in names if name != mixed.name), (case_id, error)
    for case_id in good:
        name = next(p.name for p in out.iterdir() if p.name.startswith(case_id + "."))
        np.testing.assert_array_equal(read_image(out / name)[0], read_image(clean / name)[0], err_msg=case_id)
    assert not [p for p in out.rglob("*") if p.name.startswith(TEMP_PREFIX)]
    failed_outputs = [p for p in out.iterdir() if p.name.split(".")[0] in expected and not p.name.startswith("dup.")]
    assert not failed_outputs, failed_outputs


def test_the_corpus_is_large_and_varied(corpus: tuple[Path, Path, dict[str, str], list[str]]) -> None:
    _, _, expected, _ = corpus
    assert len(expected) >= 60
    kinds = {name.split("_")[0] for name in expected}
    assert {"nii", "nrrd", "mha", "dicom", "png", "link"} <= kinds


def test_seg_run_over_the_corpus(tmp_path: Path, corpus: tuple[Path, Path, dict[str, str], list[str]],
                                 bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    clean, mixed, expected, good = corpus
    bundle = bundle_factory(preprocess=SPEC)
    assert seg_run(["predict", str(bundle), "-i", str(clean), "-o", str(tmp_path / "clean")]) == 0
    capsys.readouterr()
    assert seg_run(["predict", str(bundle), "-i", str(mixed), "-o", str(tmp_path / "mixed")]) == 1
    _check(tmp_path / "mixed", tmp_path / "clean", expected, good, mixed, capsys.readouterr().err)


def test_seg_predict_over_the_corpus(tmp_path: Path, corpus: tuple[Path, Path, dict[str, str], list[str]],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from seg.cli import main as seg

    clean, mixed, expected, good = corpus
    checkpoint = _checkpoint(tmp_path)
    assert seg(["predict", "--model", str(checkpoint), "-i", str(clean), "-o", str(tmp_path / "clean")]) == 0
    capsys.readouterr()
    assert seg(["predict", "--model", str(checkpoint), "-i", str(mixed), "-o", str(tmp_path / "mixed")]) == 1
    _check(tmp_path / "mixed", tmp_path / "clean", expected, good, mixed, capsys.readouterr().err)
    assert nib.load(str(tmp_path / "mixed" / "good_nifti.nii.gz")).shape == (9, 8, 7)
