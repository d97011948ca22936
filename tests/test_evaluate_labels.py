"""``seg evaluate`` flags reference label values that the label map does not know."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from seg.cli import main

REPO = Path(__file__).resolve().parents[1]


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr.astype(np.uint8), np.eye(4)), str(path))


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    ref = np.zeros((12, 12, 12), np.uint8)
    ref[2:6, 2:6, 2:6] = 1
    ref[7:10, 7:10, 7:10] = 2
    for cid, extra in (("a", None), ("b", 5), ("c", 7)):
        r = ref.copy()
        if extra is not None:
            r[0, 0, :3] = extra  # a value outside {background 0, lesion 1, organ 2}
        _save(tmp_path / "ref" / f"{cid}.nii.gz", r)
        _save(tmp_path / "pred" / f"{cid}.nii.gz", ref)
    return tmp_path / "pred", tmp_path / "ref"


def test_unknown_reference_labels_warn_and_are_recorded(folders: tuple[Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    pred, ref = folders
    out = tmp_path / "eval"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--config", str(REPO / "configs" / "demo3d.yaml"),
                 "--no-surface", "-o", str(out)]) == 0
    stdout = capsys.readouterr().out
    warnings = [line for line in stdout.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "[5, 7]" in warnings[0] and "2 case(s): b, c" in warnings[0]
    result = json.loads((out / "evaluation.json").read_text())
    assert result["unknown_labels"] == {"b": [5], "c": [7]}
    assert result["mean"]["dice_lesion"] == pytest.approx(1.0)


def test_known_labels_give_no_warning(folders: tuple[Path, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    pred, _ = folders
    out = tmp_path / "eval"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(pred), "--config",
                 str(REPO / "configs" / "demo3d.yaml"), "--no-surface", "-o", str(out)]) == 0
    assert "WARNING" not in capsys.readouterr().out
    assert json.loads((out / "evaluation.json").read_text())["unknown_labels"] == {}


def test_shape_mismatch_is_one_line(folders: tuple[Path, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    pred, ref = folders
    _save(pred / "b.nii.gz", np.zeros((12, 12, 10), np.uint8))
    # The case fails alone (exit 1, as the README says), in one line naming the file; the others are scored.
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--no-surface"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    failed = [line for line in captured.out.splitlines() if line.startswith("  b: ")]
    assert len(failed) == 1 and str(pred / "b.nii.gz") in failed[0] and "differs from the reference" in failed[0]
    assert [c["id"] for c in json.loads((pred / "evaluation.json").read_text())["cases"]] == ["a", "c"]
