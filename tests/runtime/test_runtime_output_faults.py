"""Issue 26 class 7 (runtime side): a full disk, a failing disk or a forbidden path while writing ends in
one line, with the records of what finished intact and nothing partial left. The faults are injected
(EACCES, ENOSPC, EIO at write, fsync and rename): CI runs as root, where chmod takes nothing away."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import save_nifti

from seg_runtime.atomic import TEMP_PREFIX
from seg_runtime.cli import main


def _scans(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(3):
        save_nifti(folder / f"c{index}.nii.gz", np.full((9, 8, 7), 0.5 + index, np.float32), np.eye(4))
    return folder


def _records(out: Path) -> dict[str, str]:
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    return {r["id"]: r["status"] for r in lines if r.get("type") == "case"}


def _no_leftovers(out: Path) -> None:
    assert not [p for p in out.rglob("*") if p.name.startswith(TEMP_PREFIX)], list(out.rglob("*"))


def _one_line(capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("seg-run: error:"), err
    assert all(n in err for n in needles), err


@pytest.mark.parametrize(("code", "text"), [(errno.ENOSPC, "No space left on device"),
                                            (errno.EIO, "Input/output error")])
def test_a_failing_summary_write_is_one_line_and_the_records_stay(
    tmp_path: Path, bundle_factory: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], code: int, text: str,
) -> None:
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        if str(dst).endswith("predictions.json"):
            raise OSError(code, os.strerror(code), str(src), None, str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "out"
    assert main(["predict", str(bundle_factory()), "-i", str(_scans(tmp_path)), "-o", str(out)]) == 2
    _one_line(capsys, text, "predictions.json")
    assert _records(out) == {"c0": "ok", "c1": "ok", "c2": "ok"}  # every finished case is on record
    assert sorted(p.name for p in out.glob("c*.nii.gz")) == ["c0.nii.gz", "c1.nii.gz", "c2.nii.gz"]
    _no_leftovers(out)
    monkeypatch.undo()
    assert main(["predict", str(bundle_factory()), "-i", str(tmp_path / "in"), "-o", str(out)]) == 0
    assert "3: 0 ok, 3 skipped" in capsys.readouterr().out  # the records were enough to skip them


def test_a_label_map_that_cannot_be_written_fails_its_case_only(
    tmp_path: Path, bundle_factory: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync
    seen: list[int] = []

    def fsync(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if "c1.nii.gz" in name and TEMP_PREFIX in name:
            seen.append(fd)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    import nibabel as nib

    real_to_filename = nib.Nifti1Image.to_filename

    def to_filename(self, filename, *args, **kwargs):  # nibabel writes, then the atomic writer fsyncs
        real_to_filename(self, filename, *args, **kwargs)
        with open(filename, "rb+") as handle:
            fsync(handle.fileno())

    monkeypatch.setattr(nib.Nifti1Image, "to_filename", to_filename)
    out = tmp_path / "out"
    assert main(["predict", str(bundle_factory()), "-i", str(_scans(tmp_path)), "-o", str(out)]) == 1
    assert seen and _records(out) == {"c0": "ok", "c1": "failed", "c2": "ok"}
    assert not (out / "c1.nii.gz").exists()
    _no_leftovers(out)


def test_a_record_that_cannot_be_written_stops_the_run_in_one_line(
    tmp_path: Path, bundle_factory: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without its record a finished output cannot be trusted: the run stops at once (ENOSPC on the
    record's write), says so, and a rerun predicts the unrecorded case again."""
    import seg_runtime.records as records

    real_write = os.write
    calls = {"n": 0}

    def write(fd: int, data: bytes) -> int:
        if b'"type":"case"' in data:
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(records.os, "write", write)
    out = tmp_path / "out"
    assert main(["predict", str(bundle_factory()), "-i", str(_scans(tmp_path)), "-o", str(out)]) == 2
    _one_line(capsys, "No space left on device")
    assert _records(out) == {"c0": "ok"}
    monkeypatch.undo()
    assert main(["predict", str(bundle_factory()), "-i", str(tmp_path / "in"), "-o", str(out)]) == 0
    assert _records(out)["c1"] == "ok" and "2 ok, 1 skipped" in capsys.readouterr().out


def test_an_output_folder_that_cannot_be_created_is_one_line(
    tmp_path: Path, bundle_factory: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self.name == "out":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert main(["predict", str(bundle_factory()), "-i", str(_scans(tmp_path)), "-o", str(tmp_path / "out")]) == 2
    _one_line(capsys, "cannot create the output folder", "Permission denied")
