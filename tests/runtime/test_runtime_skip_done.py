"""Issue 26 class 3: skip-done keeps an output only when the record proves what made it — this input,
this model, these settings, and this very file — at a constant cost per case; two unsharded runs into
one folder never both do the work."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from runtime_helpers import THRESHOLD_BIAS, THRESHOLD_WEIGHT, build_pointwise_onnx, predict, save_nifti

from seg_runtime.bundle import load_bundle, save_bundle_json
from seg_runtime.cli import main
from seg_runtime.output_dir import run_lock
from seg_runtime.session import OnnxBackend


def _folder(tmp_path: Path, count: int = 3) -> Path:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    for index in range(count):
        save_nifti(folder / f"c{index}.nii.gz", np.full((9, 8, 7), 0.5 + index, np.float32), np.eye(4))
    return folder


def _statuses(manifest) -> dict[str, str]:
    return {c["id"]: c["status"] for c in manifest.cases}


def test_a_rerun_skips_what_this_input_model_and_settings_made(
    tmp_path: Path, bundle_factory: Callable[..., Path]
) -> None:
    src, backend = _folder(tmp_path), OnnxBackend(bundle_factory(), provider="cpu")
    assert predict(backend, src, tmp_path / "out").summary["ok"] == 3
    record = json.loads((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()[1])
    assert {"input", "model", "settings", "bytes", "mtime_ns", "sample", "blake2b"} <= set(record)
    assert record["model"] == backend.digest and record["settings"]["tta"] is False
    assert predict(backend, src, tmp_path / "out").summary == {"ok": 0, "skipped": 3, "failed": 0}


def test_a_replaced_input_is_predicted_again(tmp_path: Path, bundle_factory: Callable[..., Path],
                                             caplog: pytest.LogCaptureFixture) -> None:
    src, backend = _folder(tmp_path), OnnxBackend(bundle_factory(), provider="cpu")
    predict(backend, src, tmp_path / "out")
    save_nifti(src / "c1.nii.gz", np.full((12, 10, 6), 2.5, np.float32), np.eye(4))  # another scan, same name
    rerun = predict(backend, src, tmp_path / "out")
    assert _statuses(rerun) == {"c0": "skipped", "c1": "ok", "c2": "skipped"}
    assert nib.load(str(tmp_path / "out" / "c1.nii.gz")).shape == (12, 10, 6)
    assert "its input changed" in caplog.text


def test_another_model_into_the_same_folder_predicts_everything_again(
    tmp_path: Path, bundle_factory: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    src = _folder(tmp_path)
    predict(OnnxBackend(bundle_factory("a"), provider="cpu"), src, tmp_path / "out")
    other = bundle_factory("b")
    build_pointwise_onnx(other / "model.onnx", THRESHOLD_WEIGHT[::-1].copy(), THRESHOLD_BIAS, 3)
    save_bundle_json(load_bundle(other), other)
    rerun = predict(OnnxBackend(other, provider="cpu"), src, tmp_path / "out")
    assert rerun.summary == {"ok": 3, "skipped": 0, "failed": 0}
    assert "made by another model" in caplog.text


@pytest.mark.parametrize("options", [{"tta": True}, {"keep_largest": ("class1",)}])
def test_other_settings_predict_again(tmp_path: Path, bundle_factory: Callable[..., Path], options: dict) -> None:
    src, backend = _folder(tmp_path), OnnxBackend(bundle_factory(), provider="cpu")
    predict(backend, src, tmp_path / "out")
    assert predict(backend, src, tmp_path / "out", **options).summary["ok"] == 3
    assert predict(backend, src, tmp_path / "out", **options).summary["skipped"] == 3


def test_records_without_identities_are_not_trusted(tmp_path: Path, bundle_factory: Callable[..., Path]) -> None:
    """Outputs recorded by a version that did not say what made them are predicted once more."""
    src, backend = _folder(tmp_path), OnnxBackend(bundle_factory(), provider="cpu")
    predict(backend, src, tmp_path / "out")
    records = tmp_path / "out" / "predictions.jsonl"
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    for line in lines:
        line.pop("input", None)
        line.pop("model", None)
    records.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert predict(backend, src, tmp_path / "out").summary["ok"] == 3


def test_the_rerun_check_reads_no_output_in_full(tmp_path: Path, bundle_factory: Callable[..., Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Constant cost per case: a rerun checks size, time and a sampled digest, never the full hash,
    while the files are untouched; a copied folder (other times) falls back to the full hash."""
    import seg_runtime.records as records

    src, backend = _folder(tmp_path), OnnxBackend(bundle_factory(), provider="cpu")
    predict(backend, src, tmp_path / "out")

    def forbidden(path: object) -> tuple[int, str]:
        raise AssertionError(f"{path} was hashed in full")

    monkeypatch.setattr(records, "file_digest", forbidden)
    assert predict(backend, src, tmp_path / "out").summary["skipped"] == 3
    monkeypatch.undo()
    for path in (tmp_path / "out").glob("*.nii.gz"):
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert predict(backend, src, tmp_path / "out").summary["skipped"] == 3  # same bytes: trusted after a full check


def test_a_tampered_output_with_the_same_size_and_time_is_caught(
    tmp_path: Path, bundle_factory: Callable[..., Path]
) -> None:
    src, backend = _folder(tmp_path), OnnxBackend(bundle_factory(), provider="cpu")
    predict(backend, src, tmp_path / "out")
    target = tmp_path / "out" / "c0.nii.gz"
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF  # inside the sampled tail
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _statuses(predict(backend, src, tmp_path / "out"))["c0"] == "ok"


def test_two_unsharded_runs_never_both_do_the_work(
    tmp_path: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src, out = _folder(tmp_path), tmp_path / "out"
    out.mkdir()
    with run_lock(out, None):  # a first run is writing the folder
        assert main(["predict", str(bundle_factory()), "-i", str(src), "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "is writing this folder" in err and f"pid {os.getpid()}" in err and len(err.splitlines()) == 1
        assert main(["predict", str(bundle_factory()), "-i", str(src), "-o", str(out), "--shard", "0/2"]) == 2
    assert not list(out.glob("*.nii.gz"))
    with run_lock(out, (1, 2)):  # a shard is running: another shard may run beside it, not the same one
        assert main(["predict", str(bundle_factory()), "-i", str(src), "-o", str(out), "--shard", "0/2"]) == 0
        assert main(["predict", str(bundle_factory()), "-i", str(src), "-o", str(out), "--shard", "1/2"]) == 2
    assert main(["predict", str(bundle_factory()), "-i", str(src), "-o", str(out)]) == 0  # released
