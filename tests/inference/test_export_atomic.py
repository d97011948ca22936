"""``seg export`` is atomic: a failed (re-)export leaves the previous bundle as it was, and no stray files."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import pytest
import torch

from seg.cli import main as seg
from seg.engine.checkpoint import load_checkpoint, save_checkpoint
from seg.engine.fit import fit
from seg.errors import CheckpointError
from seg.export_onnx import ExportError, export_bundle

from ..conftest import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("atomic")
    return fit(tiny_config(tmp, 3, "train.epochs=1"), progress=False).run_dir


def _nan_checkpoint(run: Path, path: Path) -> Path:
    """A checkpoint whose network really computes NaN logits (one head bias is NaN)."""
    ck = load_checkpoint(run / "best.pt")
    sd = dict(ck.weights)
    sd["head.bias"] = torch.full_like(sd["head.bias"], math.nan)
    return save_checkpoint(dataclasses.replace(ck, weights=sd), path)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_failed_reexport_keeps_the_previous_bundle(run: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "bundle"
    assert seg(["export", str(run), "-o", str(bundle)]) == 0
    (bundle / "NOTES.txt").write_text("kept across re-exports")
    before = _snapshot(bundle)
    assert set(before) == {"model.onnx", "model.json", "NOTES.txt"}
    with pytest.raises(ExportError, match="tolerance"):  # fails in the staging folder, after the export
        export_bundle(run, bundle, tolerance=-1.0)
    broken = _nan_checkpoint(run, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN or Inf weights"):  # refused before anything is written
        export_bundle(broken, bundle)
    capsys.readouterr()
    assert seg(["export", str(broken), "-o", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and str(broken) in err
    assert seg(["predict", "--model", str(broken), "-i", str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "NaN or Inf weights" in err and "Traceback" not in err and not (tmp_path / "out").exists()
    assert _snapshot(bundle) == before  # the old model and model.json, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "nan.pt"]  # no staging folder left


def test_parity_failure_on_a_fresh_folder_writes_nothing(run: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="tolerance"):
        export_bundle(run, tmp_path / "new", tolerance=-1.0)  # every real diff exceeds it
    assert list(tmp_path.iterdir()) == []


def test_successful_reexport_replaces_the_model(run: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    export_bundle(run, bundle)
    (bundle / "model.onnx").write_bytes(b"stale")
    report = export_bundle(run, bundle)
    assert report.bundle_dir == bundle and (bundle / "model.onnx").read_bytes() != b"stale"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_export_refuses_a_folder_that_is_not_a_bundle(run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "home"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    with pytest.raises(ExportError, match="not a bundle"):
        export_bundle(run, folder)
    assert _snapshot(folder) == {"thesis.tex": b"precious"}


def test_bundle_is_readable_by_other_users(run: Path, tmp_path: Path) -> None:
    """A bundle deployed from a shared folder is read by other users, containers and Ray workers: the
    staging folder it is built in takes the umask's mode, not mkdtemp's private 0700."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        assert seg(["export", str(run), "-o", str(tmp_path / "bundle")]) == 0
    finally:
        os.umask(old)
    bundle = tmp_path / "bundle"
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o755
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in bundle.iterdir()} == {
        "model.onnx": 0o644, "model.json": 0o644}


def test_export_prints_the_parity_numbers_the_log_has(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Issue 29: the table printed 0.0000 where the log said 3.27e-05; now both say the same."""
    caplog.set_level(logging.INFO, logger="seg.export_onnx")
    assert seg(["export", str(run), "-o", str(tmp_path / "bundle")]) == 0
    logged = next(r for r in caplog.records if r.getMessage().startswith("parity: max abs diff"))
    random_diff, realistic_diff = (f"{v:.3g}" for v in logged.args[:2])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"bundle: {tmp_path / 'bundle'}" and max(len(line) for line in lines[1:-1]) <= 100
    rows = {line.split("  ")[0]: line.split() for line in lines if line.startswith(("random", "realistic"))}
    assert rows["random input"][2] == random_diff and rows["realistic input"][2] == realistic_diff
    assert float(random_diff) > 0 and "0.0000" not in "\n".join(lines)  # the difference is shown, not rounded away
