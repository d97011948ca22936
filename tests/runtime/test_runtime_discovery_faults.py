"""Issue 26 class 4: discovery records loops, dangling links and unreadable entries as failed cases and
goes on; the good cases beside them are predicted as in a clean folder."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import save_nifti

from seg_runtime.cli import main


def _good(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(2):
        save_nifti(folder / f"good{index}.nii.gz", np.full((9, 8, 7), 0.5 + index, np.float32), np.eye(4))


def _records(out: Path) -> dict[str, dict]:
    return {c["id"]: c for c in json.loads((out / "predictions.json").read_text())["cases"]}


def test_links_loops_and_pipes_are_recorded_not_fatal(
    tmp_path: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    _good(src)
    (src / "loop_a.nii.gz").symlink_to(src / "loop_b.nii.gz")
    (src / "loop_b.nii.gz").symlink_to(src / "loop_a.nii.gz")
    (src / "folder_loop").symlink_to(src / "folder_loop")
    (src / "gone.nii.gz").symlink_to(tmp_path / "deleted.nii.gz")
    os.mkfifo(src / "pipe.nii.gz")
    assert main(["predict", str(bundle_factory()), "-i", str(src), "-o", str(tmp_path / "out")]) == 1
    records = _records(tmp_path / "out")
    assert {k for k, v in records.items() if v["status"] == "ok"} == {"good0", "good1"}
    errors = {k: v["error"] for k, v in records.items() if v["status"] == "failed"}
    assert set(errors) == {"loop_a.nii.gz", "loop_b.nii.gz", "folder_loop", "gone.nii.gz", "pipe.nii.gz"}
    assert "symbolic link loop" in errors["loop_a.nii.gz"] and "symbolic link loop" in errors["folder_loop"]
    assert "dangling symbolic link" in errors["gone.nii.gz"] and "deleted.nii.gz" in errors["gone.nii.gz"]
    assert "not a regular file" in errors["pipe.nii.gz"]
    assert "Traceback" not in capsys.readouterr().err


def test_an_unreadable_subfolder_is_one_failed_case(
    tmp_path: Path, bundle_factory: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """EACCES injected (CI runs as root, where chmod cannot take a folder away)."""
    src = tmp_path / "in"
    _good(src)
    locked = src / "series1"
    locked.mkdir()
    (locked / "x.dcm").write_bytes(b"\0" * 200)
    real_iterdir = Path.iterdir

    def iterdir(self: Path):
        if self == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    assert main(["predict", str(bundle_factory()), "-i", str(src), "-o", str(tmp_path / "out")]) == 1
    records = _records(tmp_path / "out")
    assert records["series1"]["status"] == "failed"
    assert "cannot read the folder (Permission denied)" in records["series1"]["error"]
    assert records["good0"]["status"] == records["good1"]["status"] == "ok"
