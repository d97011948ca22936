"""Issue 29: one end-of-run summary for ``seg-run``, ``seg predict`` and ``--summary`` — counts, total
wall time and cases per second — and per-case lines that stay on screen above the progress bar in a
terminal, while logs (no terminal) get the summary alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import predict, save_nifti

from seg_runtime.cli import main as seg_run
from seg_runtime.runners import case_line
from seg_runtime.session import OnnxBackend


def _scans(folder: Path, names: tuple[str, ...]) -> Path:
    folder.mkdir(exist_ok=True)
    for name in names:
        save_nifti(folder / f"{name}.nii.gz", np.full((10, 9, 8), 1.5, np.float32), np.eye(4))
    return folder


def _labels(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines() if line and not line.startswith(" ")]


def test_without_a_terminal_only_the_summary_is_printed(
    tmp_path: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src = _scans(tmp_path / "in", ("a", "b"))
    bundle = bundle_factory()
    assert seg_run(["predict", str(bundle), "-i", str(src), "-o", str(tmp_path / "out"), "--provider", "cpu"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # no bar, no log line: stderr is not a terminal here
    assert _labels(captured.out) == ["cases", "time", "model", "output", "records", "summary"]
    assert "2: 2 ok, 0 skipped, 0 failed" in captured.out and "cases/s)" in captured.out


def test_the_folder_summary_has_the_same_rows_and_adds_up_the_runs(
    tmp_path: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src, out = _scans(tmp_path / "in", ("a", "b")), tmp_path / "out"
    bundle = bundle_factory()
    args = ["predict", str(bundle), "-i", str(src), "-o", str(out), "--provider", "cpu"]
    assert seg_run(args) == 0
    _scans(src, ("c",))
    assert seg_run(args) == 0  # a and b skipped, c predicted
    capsys.readouterr()
    assert seg_run(["--summary", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert _labels(text) == ["cases", "time", "output", "records", "summary"]
    time_row = next(line for line in text.splitlines() if line.startswith("time"))
    assert " in 2 runs (" in time_row and "cases/s" in time_row
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == 2 and summary["predicted"] == 3 and summary["seconds"] > 0


def test_in_a_terminal_each_case_leaves_a_line(
    tmp_path: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src = _scans(tmp_path / "in", ("a", "b"))
    (src / "broken.nii.gz").write_bytes(b"not a scan")
    backend = OnnxBackend(bundle_factory(), provider="cpu")
    predict(backend, src, tmp_path / "out", progress=True)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["ok", "a"], ["ok", "b"], ["failed", "broken"]]
    assert lines[0].endswith("a.nii.gz") and " s  " in lines[0]
    assert "broken.nii.gz" in lines[2]  # the failure's one-line reason names the file
    predict(backend, src, tmp_path / "out", progress=True, preview=True)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines][:2] == [["added", "a"], ["added", "b"]]
    assert lines[0].endswith("preview")


def test_case_line_of_each_outcome() -> None:
    assert case_line({"id": "c1", "status": "ok", "seconds": 2.25, "output": "/o/c1.nii.gz"}) == \
        "ok      c1     2.2 s  c1.nii.gz"
    assert case_line({"id": "c2", "status": "failed", "seconds": None, "error": "c2.nrrd: truncated"}) == \
        "failed  c2  c2.nrrd: truncated"
