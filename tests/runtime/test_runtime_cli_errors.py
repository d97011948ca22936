"""Issue 14 items 5 and 6 (runtime side): bad output paths and empty or mismatched inputs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import predict, save_nifti

from seg_runtime.cases import NoCasesError, discover_cases
from seg_runtime.cli import main
from seg_runtime.errors import SegError
from seg_runtime.session import OnnxBackend


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("seg-run: error:") and all(n in err for n in needles), err
    return err


def _inputs(folder: Path) -> Path:
    folder.mkdir()
    save_nifti(folder / "a.nii.gz", np.full((4, 4, 4), 1.5, np.float32), np.eye(4))
    return folder


@pytest.mark.parametrize("where", ["file", "below-a-file"])
def test_output_path_that_is_a_file(
    tmp_path: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str], where: str
) -> None:
    src = _inputs(tmp_path / "in")
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    out = blocker if where == "file" else blocker / "sub"
    assert main([str(bundle_factory()), "-i", str(src), "-o", str(out), "--provider", "cpu"]) == 2
    _one_line_error(capsys, str(out))
    assert blocker.read_text() == "not a folder"


def test_unwritable_output_folder(
    tmp_path: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes through permissions")
    src = _inputs(tmp_path / "in")
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert main([str(bundle_factory()), "-i", str(src), "-o", str(out), "--provider", "cpu"]) == 2
        _one_line_error(capsys, str(out), "not writable")
    finally:
        out.chmod(0o700)


def test_empty_input_folder_exits_non_zero(
    tmp_path: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "empty"
    src.mkdir()
    (src / "notes.txt").write_text("no images here")
    assert main([str(bundle_factory()), "-i", str(src), "-o", str(tmp_path / "out"), "--provider", "cpu"]) == 2
    _one_line_error(capsys, str(src), "no cases found")
    # seg predict goes through the same function, so it fails the same way.
    with pytest.raises(NoCasesError, match="no cases found") as info:
        predict(OnnxBackend(bundle_factory("b2"), provider="cpu"), src, tmp_path / "out2")
    assert isinstance(info.value, SegError)


def test_channel_split_folder_not_matching_the_model_is_one_problem(
    tmp_path: Path, bundle_factory: Callable[..., Path]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for channel in ("0000", "0001", "0002"):
        save_nifti(src / f"brain_{channel}.nii.gz", np.full((4, 4, 4), 1.5, np.float32), np.eye(4))
    save_nifti(src / "solo.nii.gz", np.full((4, 4, 4), 1.5, np.float32), np.eye(4))
    cases, problems = discover_cases(src, spatial_dims=3, in_channels=1)
    assert [c.id for c in cases] == ["solo"]
    assert len(problems) == 1 and problems[0][0] == "brain"
    assert "brain_0000.nii.gz, brain_0001.nii.gz, brain_0002.nii.gz" in problems[0][1]
    assert "model takes 1 channel" in problems[0][1]
    out = tmp_path / "out"
    assert main([str(bundle_factory()), "-i", str(src), "-o", str(out), "--provider", "cpu"]) == 1
    manifest = json.loads((out / "predictions.json").read_text())
    assert {c["id"]: c["status"] for c in manifest["cases"]} == {"brain": "failed", "solo": "ok"}
    assert not list(out.glob("brain_*"))


def test_numbered_single_channel_cases_are_still_cases(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for number in ("0001", "0002"):
        save_nifti(src / f"scan_{number}.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
    cases, problems = discover_cases(src, spatial_dims=3, in_channels=1)
    assert [c.id for c in cases] == ["scan_0001", "scan_0002"] and not problems
