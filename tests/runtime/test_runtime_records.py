"""The append-only per-case records: torn lines, verified skip-done, shards sharing a folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from runtime_helpers import predict, save_nifti

from seg_runtime.cli import main
from seg_runtime.manifest import RunManifest, folder_summary
from seg_runtime.records import RecordWriter, file_digest, iter_records, latest_states
from seg_runtime.session import OnnxBackend


def _cases(folder: Path, count: int, shape: tuple[int, ...] = (6, 7, 8)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image = np.linspace(0, 3, int(np.prod(shape)), dtype=np.float32).reshape(shape)
        save_nifti(folder / f"c{index}.nii.gz", np.roll(image, index, axis=0), np.eye(4))
    return folder


def _case_lines(folder: Path) -> list[dict]:
    return [r for p in sorted(folder.glob("*.jsonl")) for r in iter_records(p) if r["type"] == "case"]


def test_writer_appends_and_reader_skips_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    with RecordWriter(path) as writer:
        writer.append({"type": "case", "id": "a", "status": "ok", "time": "1"})
    with open(path, "ab") as handle:  # a writer killed mid-line
        handle.write(b'{"type": "case", "id": "b", "sta')
    with RecordWriter(path) as writer:  # the next run starts its lines on a fresh line
        writer.append({"type": "case", "id": "c", "status": "failed", "time": "2"})
    assert [r["id"] for r in iter_records(path)] == ["a", "c"]
    assert path.read_bytes().count(b"\n") == 3


def test_ok_records_carry_the_outputs_checksum(tmp_path: Path, bundle_factory: Callable[..., Path]) -> None:
    predictor = OnnxBackend(bundle_factory(), provider="cpu")
    manifest = predict(predictor, _cases(tmp_path / "in", 2), tmp_path / "out", progress=False)
    assert manifest.summary == {"ok": 2, "skipped": 0, "failed": 0}
    lines = _case_lines(tmp_path / "out")
    assert {line["id"] for line in lines} == {"c0", "c1"}
    for line in lines:
        assert (line["bytes"], line["blake2b"]) == file_digest(tmp_path / "out" / f"{line['id']}.nii.gz")
    summary = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert summary["summary"] == {"ok": 2, "skipped": 0, "failed": 0}
    assert [c["id"] for c in summary["cases"]] == ["c0", "c1"]


@pytest.mark.parametrize("damage", ["truncate", "same_size_garbage", "foreign", "record_torn"])
def test_rerun_redoes_outputs_it_cannot_verify(
    tmp_path: Path, bundle_factory: Callable[..., Path], damage: str
) -> None:
    predictor = OnnxBackend(bundle_factory(), provider="cpu")
    src, out = _cases(tmp_path / "in", 3), tmp_path / "out"
    predict(predictor, src, out, progress=False)
    good = np.asarray(nib.load(str(out / "c1.nii.gz")).dataobj).copy()
    target = out / "c1.nii.gz"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:40])
    elif damage == "same_size_garbage":
        target.write_bytes(b"\0" * target.stat().st_size)
    elif damage == "foreign":  # a valid label map this tool did not write: no record says so
        (out / "c3.nii.gz").write_bytes(target.read_bytes())
        save_nifti(src / "c3.nii.gz", np.zeros((6, 7, 8), np.float32), np.eye(4))
    else:  # killed while writing the last case's line: the file ends in a torn line
        text = (out / "predictions.jsonl").read_text().splitlines(keepends=True)
        assert '"id":"c2"' in text[-1]
        (out / "predictions.jsonl").write_text("".join(text[:-1]) + text[-1][:30])
    again = predict(predictor, src, out, progress=False)
    redone = {"foreign": "c3", "record_torn": "c2"}.get(damage, "c1")
    assert again.summary == {"ok": 1, "skipped": 3 if damage == "foreign" else 2, "failed": 0}
    assert [c["id"] for c in again.cases if c["status"] == "ok"] == [redone]
    np.testing.assert_array_equal(np.asarray(nib.load(str(out / "c1.nii.gz")).dataobj), good)
    assert latest_states(out)[redone].status == "ok"


def test_shards_into_one_folder_keep_every_record(tmp_path: Path, bundle_factory: Callable[..., Path]) -> None:
    bundle = bundle_factory(patch_size=[4, 4, 4])
    src, out = _cases(tmp_path / "in", 7, (4, 4, 4)), tmp_path / "out"
    (src / "broken.nii.gz").write_bytes(b"not an image")
    codes = [main([str(bundle), "-i", str(src), "-o", str(out), "--shard", f"{i}/3"]) for i in range(3)]
    assert sorted(codes) == [0, 0, 1]  # the shard holding the broken case reports it
    assert sorted(p.name for p in out.glob("*.jsonl")) == [f"predictions.shard-{i}-of-3.jsonl" for i in range(3)]
    lines = _case_lines(out)
    assert sorted(line["id"] for line in lines) == sorted([f"c{i}" for i in range(7)] + ["broken"])
    merged = folder_summary(out)
    assert merged["cases"] == 8 and merged["summary"] == {"ok": 7, "failed": 1}
    assert merged["failed"][0]["id"] == "broken"
    # A later unsharded run sees the shards' records: nothing to redo but the broken case.
    rerun = predict(OnnxBackend(bundle, provider="cpu"), src, out, progress=False)
    assert rerun.summary == {"ok": 0, "skipped": 7, "failed": 1}


def test_summary_command_merges_shards(
    tmp_path: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = bundle_factory(patch_size=[4, 4, 4])
    src, out = _cases(tmp_path / "in", 4, (4, 4, 4)), tmp_path / "out"
    for shard in ("0/2", "1/2"):
        assert main([str(bundle), "-i", str(src), "-o", str(out), "--shard", shard]) == 0
    capsys.readouterr()
    assert main(["--summary", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cases     4: 4 ok, 0 failed" in printed
    assert json.loads((out / "summary.json").read_text())["summary"] == {"ok": 4, "failed": 0}
    assert main(["--summary", "-o", str(tmp_path / "in")]) == 2  # no records there


def test_old_predictions_json_still_reads(tmp_path: Path) -> None:
    old = {"tool": "seg-run", "version": "0.1.0", "model": {}, "started": "s", "updated": "u",
           "cases": [{"id": "a", "inputs": ["x"], "status": "ok", "output": "a.nii.gz", "seconds": 1.0,
                      "error": None},
                     {"id": "b", "inputs": ["y"], "status": "failed", "output": None, "seconds": 0.1,
                      "error": "y: bad"}],
           "summary": {"ok": 1, "skipped": 0, "failed": 1}}
    (tmp_path / "predictions.json").write_text(json.dumps(old))
    loaded = RunManifest.load(tmp_path / "predictions.json")
    assert loaded.summary == {"ok": 1, "skipped": 0, "failed": 1}
    assert [c["id"] for c in loaded.cases] == ["a", "b"] and loaded.failures()[0]["error"] == "y: bad"
    merged = folder_summary(tmp_path, write=False)
    assert merged["cases"] == 2 and merged["summary"] == {"ok": 1, "failed": 1}


def test_a_killed_run_resumes_without_loss(tmp_path: Path, bundle_factory: Callable[..., Path]) -> None:
    """SIGKILL mid-run, then rerun: every case ends up done exactly once, every output valid."""
    import os
    import signal
    import subprocess
    import sys
    import time

    bundle = bundle_factory(patch_size=[4, 4, 4])
    src, out = _cases(tmp_path / "in", 150, (6, 6, 6)), tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen([sys.executable, "-m", "seg_runtime.cli", str(bundle), "-i", str(src), "-o", str(out),
                              "--provider", "cpu", "--threads", "1"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        records = out / "predictions.jsonl"
        if records.exists() and records.read_bytes().count(b'"status":"ok"') >= 5:
            break
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    finished = {line["id"] for line in _case_lines(out) if line["status"] == "ok"}
    assert 5 <= len(finished) < 150, "the kill should land mid-run"
    rerun = predict(OnnxBackend(bundle, provider="cpu"), src, out, progress=False)
    assert rerun.summary["failed"] == 0 and rerun.summary["skipped"] == len(finished)
    assert rerun.summary["ok"] == 150 - len(finished)
    for index in range(150):
        assert nib.load(str(out / f"c{index}.nii.gz")).get_fdata().shape == (6, 6, 6)
    assert folder_summary(out)["summary"] == {"ok": 150, "failed": 0}


def test_concurrent_shards_into_one_folder(tmp_path: Path, bundle_factory: Callable[..., Path]) -> None:
    """Three seg-run processes at once, one shard each, into one folder: every case recorded once."""
    import os
    import subprocess
    import sys

    bundle = bundle_factory(patch_size=[4, 4, 4])
    src, out = _cases(tmp_path / "in", 45, (5, 5, 5)), tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    children = [subprocess.Popen([sys.executable, "-m", "seg_runtime.cli", str(bundle), "-i", str(src), "-o", str(out),
                                  "--provider", "cpu", "--threads", "1", "--shard", f"{i}/3"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(3)]
    assert [child.wait(timeout=120) for child in children] == [0, 0, 0]
    lines = _case_lines(out)
    assert sorted(line["id"] for line in lines) == sorted(f"c{i}" for i in range(45))
    assert folder_summary(out)["summary"] == {"ok": 45, "failed": 0}
    for line in lines:
        assert (line["bytes"], line["blake2b"]) == file_digest(out / f"{line['id']}.nii.gz")
