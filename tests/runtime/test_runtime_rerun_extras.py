"""Issue 29: a rerun that asks for an extra output makes it for the finished cases that lack it — from
the label map on disk when the record proves it current (no prediction), by predicting again only for
the probabilities, which only the network gives — and says so; an extra is trusted, like the label
map, only when the record proves the file on disk is the one written."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from runtime_helpers import predict, save_nifti

from seg_runtime.cli import main as seg_run
from seg_runtime.session import OnnxBackend


def _scans(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(2):
        image = np.zeros((12, 10, 8), np.float32)
        image[2:9, 3:8, 2:6] = 1.5 + index  # the tiny bundle's threshold paints this box
        save_nifti(folder / f"c{index}.nii.gz", image, np.eye(4))
    return folder


def _label_times(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.glob("c*.nii.gz")) if "probabilities" not in p.name}


def test_a_rerun_with_preview_adds_previews_without_predicting(
    tmp_path: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src, out, bundle = _scans(tmp_path), tmp_path / "out", bundle_factory()
    args = ["predict", str(bundle), "-i", str(src), "-o", str(out), "--provider", "cpu", "--no-progress"]
    assert seg_run(args) == 0
    labels = _label_times(out)
    capsys.readouterr()
    assert seg_run([*args, "--preview"]) == 0
    text = capsys.readouterr().out
    assert "2: 0 ok, 2 skipped, 0 failed" in text and "added to 2 skipped case(s)" in text
    assert _label_times(out) == labels  # the label maps were kept, not written again
    for case in ("c0", "c1"):
        with Image.open(out / "preview" / f"{case}.png") as png:
            assert png.size[0] > 0
    # The next rerun trusts the recorded previews: nothing to add.
    capsys.readouterr()
    assert seg_run([*args, "--preview"]) == 0
    assert "added to" not in capsys.readouterr().out


def test_an_extra_that_is_not_the_recorded_file_is_made_again(
    tmp_path: Path, bundle_factory: Callable[..., Path]
) -> None:
    src, out = _scans(tmp_path), tmp_path / "out"
    backend = OnnxBackend(bundle_factory(), provider="cpu")
    first = predict(backend, src, out, preview=True)
    assert first.summary["ok"] == 2
    record = next(c for c in first.cases if c["id"] == "c0")
    assert record["extras"]["preview"]["file"] == "c0.png"
    (out / "preview" / "c0.png").write_bytes(b"not the preview this tool wrote")
    os.remove(out / "preview" / "c1.png")
    again = predict(backend, src, out, preview=True)
    assert again.summary == {"ok": 0, "skipped": 2, "failed": 0} and again.completed == 2
    with Image.open(out / "preview" / "c0.png") as png:
        png.verify()


def test_probabilities_are_predicted_again_and_the_log_says_why(
    tmp_path: Path, bundle_factory: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    src, out = _scans(tmp_path), tmp_path / "out"
    backend = OnnxBackend(bundle_factory(), provider="cpu")
    predict(backend, src, out)
    again = predict(backend, src, out, save_probabilities=True)
    assert again.summary == {"ok": 2, "skipped": 0, "failed": 0}
    assert "its probabilities were not saved, and only the network gives them" in caplog.text
    assert sorted(p.name for p in out.glob("*_probabilities.nii.gz")) == [
        "c0_probabilities.nii.gz", "c1_probabilities.nii.gz"]
    assert predict(backend, src, out, save_probabilities=True).summary["skipped"] == 2


def test_extras_added_by_a_rerun_are_remembered_by_the_next(
    tmp_path: Path, bundle_factory: Callable[..., Path]
) -> None:
    src, out = _scans(tmp_path), tmp_path / "out"
    backend = OnnxBackend(bundle_factory(), provider="cpu")
    predict(backend, src, out)
    assert predict(backend, src, out, statistics=True, preview=True).completed == 2
    third = predict(backend, src, out, statistics=True, preview=True)
    assert third.summary == {"ok": 0, "skipped": 2, "failed": 0} and third.completed == 0
    stats = json.loads((out / "statistics" / "c0.json").read_text())
    assert stats["case"] == "c0"


def test_extras_that_cannot_be_made_fail_the_case_and_say_why(
    tmp_path: Path, bundle_factory: Callable[..., Path]
) -> None:
    """The input is read again for the extras, within the memory limit: over it, the case fails (exit 1),
    naming the label map kept and the extras missing; the next run predicts it again."""
    (tmp_path / "in").mkdir()
    save_nifti(tmp_path / "in" / "big.nii.gz", np.ones((64, 64, 64), np.float32), np.eye(4))  # 1 MiB
    out = tmp_path / "out"
    backend = OnnxBackend(bundle_factory(), provider="cpu")
    predict(backend, tmp_path / "in", out)
    manifest = predict(backend, tmp_path / "in", out, preview=True, max_memory_gb=0.25 / 1024)
    (failure,) = manifest.failures()
    assert failure["error"].startswith("big.nii.gz kept, but its preview could not be made: ")
    assert "memory" in failure["error"]
    assert predict(backend, tmp_path / "in", out, preview=True).summary["ok"] == 1
