"""``seg-run`` subcommands: ``predict`` and ``summary``; the form without a subcommand still works, and both
tools end a run with the one summary format (counts, time, cases/s, where things are)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import save_nifti

from seg_runtime.cli import main


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(3):
        save_nifti(folder / f"c{index}.nii.gz", np.full((9, 8, 7), 0.5 + index, np.float32), np.eye(4))
    return folder


def test_predict_subcommand_and_the_old_form_write_the_same(
    tmp_path: Path, scans: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = bundle_factory()
    assert main(["predict", str(bundle), "-i", str(scans), "-o", str(tmp_path / "new")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "cases     3: 3 ok, 0 skipped, 0 failed"
    assert printed[1].startswith("time      ") and "cases/s" in printed[1]
    digest = hashlib.sha256((bundle / "model.json").read_bytes()).hexdigest()
    assert printed[2:6] == [f"model     sha256 {digest}", f"output    {tmp_path / 'new'}",
                            f"records   {tmp_path / 'new' / 'predictions.jsonl'}",
                            f"summary   {tmp_path / 'new' / 'predictions.json'}"]
    assert main([str(bundle), "-i", str(scans), "-o", str(tmp_path / "old")]) == 0
    for index in range(3):
        name = f"c{index}.nii.gz"
        assert (tmp_path / "new" / name).read_bytes() == (tmp_path / "old" / name).read_bytes()


def test_summary_subcommand_equals_the_summary_flag(
    tmp_path: Path, scans: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(bundle_factory()), "-i", str(scans), "-o", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert main(["summary", "-o", str(tmp_path / "out")]) == 0
    by_command = capsys.readouterr().out
    assert main(["--summary", "-o", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out == by_command
    assert by_command.startswith("cases     3: 3 ok, 0 failed\n")
    assert main(["summary", "-o", str(tmp_path / "nothing")]) == 2


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "a command is required (predict, summary, serve, listen, pull)" in err and "Traceback" not in err
    assert main(["--help"]) == 0
    help_text = capsys.readouterr().out
    assert "predict" in help_text and "summary" in help_text


def test_missing_input_fails_before_the_bundle_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The pre-flight both CLIs share: a missing input is reported, not a bundle that was never opened."""
    assert main(["predict", str(tmp_path / "no-bundle"), "-i", str(tmp_path / "missing"), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"seg-run: error: input not found: {tmp_path / 'missing'}"
