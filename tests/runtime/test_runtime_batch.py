"""Folder → folder with the ONNX predictor: geometry round trips, isolation, skip, shards."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from runtime_helpers import (
    oblique_affine,
    predict,
    save_dicom_series,
    save_nifti,
    save_nrrd,
    threshold_labels,
)

from seg_runtime.atomic import TEMP_PREFIX
from seg_runtime.cli import main
from seg_runtime.manifest import RunManifest
from seg_runtime.preprocess import PreprocessSpec
from seg_runtime.session import OnnxBackend

AFFINES = {
    "ras": np.diag([1.0, 1.2, 2.0, 1.0]),
    "lps": np.array([[-0.9, 0, 0, 40], [0, -0.8, 0, 30], [0, 0, 1.5, -10], [0, 0, 0, 1]]),
    "oblique": oblique_affine(),
}


def _ramp(shape: tuple[int, ...]) -> np.ndarray:
    """A smooth, asymmetric image spanning the model's three classes (values 0..3)."""
    grids = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
    return (3.0 * (0.5 * grids[0] + 0.3 * grids[1] + 0.2 * grids[2])).astype(np.float32)


def _no_temp_files(folder: Path) -> bool:
    return not any(p.name.startswith(TEMP_PREFIX) for p in folder.rglob("*"))


@pytest.mark.parametrize("name", sorted(AFFINES))
@pytest.mark.parametrize("spacing", [None, [1.0, 1.0, 1.0]])
def test_geometry_round_trip(
    tmp_path: Path, bundle_factory: Callable[..., Path], name: str, spacing: list[float] | None
) -> None:
    affine = AFFINES[name]
    preprocess = PreprocessSpec(target_spacing=spacing, normalization=[{"scheme": "none"}])
    predictor = OnnxBackend(bundle_factory(preprocess=preprocess), provider="cpu")
    image = _ramp((13, 11, 7))
    (tmp_path / "in").mkdir()
    save_nifti(tmp_path / "in" / "case.nii.gz", image, affine)
    manifest = predict(predictor, tmp_path / "in", tmp_path / "out", progress=False)
    assert manifest.summary == {"ok": 1, "skipped": 0, "failed": 0}
    written = nib.load(str(tmp_path / "out" / "case.nii.gz"))
    source = nib.load(str(tmp_path / "in" / "case.nii.gz"))
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
    assert written.shape == image.shape
    assert (int(written.header["sform_code"]), int(written.header["qform_code"])) == (1, 1)
    labels = np.asarray(written.dataobj)
    expected = threshold_labels(image[None])
    if spacing is None:
        np.testing.assert_array_equal(labels, expected)  # pointwise model + exact inverse
    else:
        assert np.mean(labels == expected) > 0.9
    assert _no_temp_files(tmp_path / "out")


def test_mixed_good_and_bad_inputs(tmp_path: Path, bundle_factory: Callable[..., Path]) -> None:
    weight = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]], dtype=np.float32)
    bundle = bundle_factory(weight=weight, preprocess=PreprocessSpec(normalization=[{"scheme": "none"}]))
    src = tmp_path / "in"
    src.mkdir()
    affine = oblique_affine()
    good = _ramp((9, 8, 7)) / 2
    save_nifti(src / "good_0000.nii.gz", good, affine)
    save_nifti(src / "good_0001.nii.gz", good, affine)
    save_nrrd(src / "nrrd_0000.nrrd", (good * 10).astype(np.int16), affine)
    save_nrrd(src / "nrrd_0001.nrrd", np.zeros((9, 8, 7), np.int16), affine)
    (src / "corrupt_0000.nii.gz").write_bytes(b"\x1f\x8bnot really gzip" * 20)
    save_nifti(src / "corrupt_0001.nii.gz", good, affine)
    save_nifti(src / "trunc_0000.nii.gz", np.random.default_rng(0).normal(size=(20, 20, 20)), affine)
    (src / "trunc_0000.nii.gz").write_bytes((src / "trunc_0000.nii.gz").read_bytes()[:3000])
    save_nifti(src / "trunc_0001.nii.gz", np.zeros((20, 20, 20)), affine)
    for channel in ("0000", "0001"):
        save_nifti(src / f"flat_{channel}.nii.gz", np.zeros((9, 8), np.float32), np.eye(4))
    nan = good.copy()
    nan[0, 0, 0] = np.nan
    save_nifti(src / "nan_0000.nii.gz", good, affine)
    save_nifti(src / "nan_0001.nii.gz", nan, affine)
    save_nifti(src / "lonely_0000.nii.gz", good, affine)
    (src / "emptydicom").mkdir()
    save_dicom_series(src / "mixed", good, affine, series_uid="1.2.3.1")
    save_dicom_series(src / "mixed", good, affine, series_uid="1.2.3.2", name_offset=50)

    code = main([str(bundle), "-i", str(src), "-o", str(tmp_path / "out"), "--provider", "cpu"])
    assert code == 1
    manifest = json.loads((tmp_path / "out" / "predictions.json").read_text())
    status = {c["id"]: c for c in manifest["cases"]}
    assert {k for k, v in status.items() if v["status"] == "ok"} == {"good", "nrrd"}
    errors = {k: v["error"] for k, v in status.items() if v["status"] == "failed"}
    assert set(errors) == {"corrupt", "trunc", "flat", "nan", "lonely", "emptydicom", "mixed"}
    assert "corrupt_0000.nii.gz: cannot read NIfTI" in errors["corrupt"]
    assert "trunc_0000.nii.gz: cannot read NIfTI" in errors["trunc"]
    assert "flat_0000.nii.gz: image is 2D" in errors["flat"]
    assert "nan_0001.nii.gz: contains NaN" in errors["nan"]
    assert "missing channel file(s) _0001" in errors["lonely"]
    assert "emptydicom" in errors["emptydicom"] and "empty" in errors["emptydicom"]
    assert "mixed DICOM series" in errors["mixed"]
    assert manifest["summary"] == {"ok": 2, "skipped": 0, "failed": 7}
    written = nib.load(str(tmp_path / "out" / "good.nii.gz"))
    np.testing.assert_array_equal(np.asarray(written.dataobj), threshold_labels(2 * good[None]))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "good.nii.gz",
        "nrrd.nrrd",  # outputs keep the input's format
        "predictions.json",
        "predictions.jsonl",
        "predictions.lock",  # held by a run while it writes the folder
    ]


def test_rerun_skips_done_cases_and_overwrite_redoes(
    tmp_path: Path, bundle_factory: Callable[..., Path]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for index in range(3):
        save_nifti(src / f"c{index}.nii.gz", _ramp((6, 7, 8)) + index, np.eye(4))
    predictor = OnnxBackend(bundle_factory(), provider="cpu")
    first = predict(predictor, src, tmp_path / "out", progress=False)
    assert first.summary == {"ok": 3, "skipped": 0, "failed": 0}
    (tmp_path / "out" / "c1.nii.gz").unlink()
    stamp = (tmp_path / "out" / "c0.nii.gz").stat().st_mtime_ns
    second = predict(predictor, src, tmp_path / "out", progress=False)
    assert second.summary == {"ok": 1, "skipped": 2, "failed": 0}
    assert (tmp_path / "out" / "c0.nii.gz").stat().st_mtime_ns == stamp
    third = predict(predictor, src, tmp_path / "out", overwrite=True, tta=True, progress=False)
    assert third.summary == {"ok": 3, "skipped": 0, "failed": 0}
    loaded = RunManifest.load(tmp_path / "out" / "predictions.json")
    assert loaded.summary == third.summary and loaded.model["providers"] == ["CPUExecutionProvider"]


def test_shards_partition_exactly(tmp_path: Path, bundle_factory: Callable[..., Path]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for index in range(7):
        save_nifti(src / f"case{index}.nii.gz", _ramp((4, 4, 4)), np.eye(4))
    bundle = bundle_factory(patch_size=[4, 4, 4])
    seen: list[str] = []
    for shard in range(3):
        assert main([str(bundle), "-i", str(src), "-o", str(tmp_path / "out"), "--shard", f"{shard}/3"]) == 0
        manifest = json.loads((tmp_path / "out" / f"predictions.shard-{shard}-of-3.json").read_text())
        assert all(c["status"] == "ok" for c in manifest["cases"])
        seen += [c["id"] for c in manifest["cases"]]
    assert sorted(seen) == [f"case{i}" for i in range(7)]  # each case exactly once
    assert len({p.name for p in (tmp_path / "out").glob("case*.nii.gz")}) == 7


def test_2d_png_model_with_probabilities(tmp_path: Path, bundle_factory: Callable[..., Path]) -> None:
    from PIL import Image

    weight = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    bundle = bundle_factory(
        spatial_dims=2,
        weight=weight,
        bias=np.zeros(3, np.float32),
        patch_size=[8, 8],
        preprocess=PreprocessSpec(normalization=[{"scheme": "minmax", "lo": 0, "hi": 255}]),
    )
    src = tmp_path / "in"
    src.mkdir()
    rgb = np.random.default_rng(0).integers(0, 255, (13, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(src / "photo.png")
    code = main(
        [
            str(bundle),
            "-i",
            str(src),
            "-o",
            str(tmp_path / "out"),
            "--save-probabilities",
            "--tta",
            "--batch-size",
            "3",
        ]
    )
    assert code == 0
    labels = np.asarray(Image.open(tmp_path / "out" / "photo.png"))
    logits = np.stack([np.zeros((13, 10)), rgb[..., 0] / 255.0, rgb[..., 2] / 255.0])
    assert labels.shape == (13, 10)
    np.testing.assert_array_equal(labels, np.argmax(logits, axis=0))
    probabilities = np.load(tmp_path / "out" / "photo_probabilities.npz")["probabilities"]
    assert probabilities.shape == (3, 13, 10)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=5e-3)


def test_cli_usage_and_bundle_errors(
    tmp_path: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = bundle_factory()
    (tmp_path / "in").mkdir()
    assert main([str(tmp_path / "nope"), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 2
    assert "model.json: not found" in capsys.readouterr().err
    assert main([str(bundle), "-i", str(tmp_path / "missing"), "-o", str(tmp_path / "out")]) == 2
    assert main([str(bundle), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--shard", "3/3"]) == 2
    (bundle / "model.onnx").write_bytes(b"garbage")
    assert main([str(bundle), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1].startswith("seg-run: error:") and "model.onnx" in err[-1] and "Traceback" not in "".join(err)
    )


def test_float16_probabilities_above_the_budget(
    tmp_path: Path, bundle_factory: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import seg_runtime.stages as batch

    assert batch.probability_dtype(3, (64, 64, 64)) is np.float32
    assert batch.probability_dtype(2, (512, 512, 400)) is np.float16
    src = tmp_path / "in"
    src.mkdir()
    image = _ramp((17, 13, 9))
    save_nifti(src / "case.nii.gz", image, AFFINES["oblique"])
    preprocess = PreprocessSpec(target_spacing=[1.0, 1.0, 1.0], normalization=[{"scheme": "none"}])
    predictor = OnnxBackend(bundle_factory(preprocess=preprocess), provider="cpu")
    runs = {}
    for budget in (batch.PROBABILITY_BUDGET_BYTES, 0):  # 0: every image takes the float16 path
        monkeypatch.setattr(batch, "PROBABILITY_BUDGET_BYTES", budget)
        out = tmp_path / f"out{budget}"
        manifest = predict(predictor, src, out, save_probabilities=True, progress=False)
        assert manifest.summary["ok"] == 1
        runs[budget] = (
            np.asarray(nib.load(str(out / "case.nii.gz")).dataobj),
            np.asarray(nib.load(str(out / "case_probabilities.nii.gz")).get_fdata()),
        )
    (labels32, probs32), (labels16, probs16) = runs.values()
    assert np.mean(labels32 == labels16) > 0.999
    np.testing.assert_allclose(probs16, probs32, atol=1 / 255 + 1e-6)  # stored as uint8 steps


def test_mirroring_defaults_to_the_bundle_and_the_flags_override_it(
    tmp_path: Path, bundle_factory: Callable[..., Path]
) -> None:
    """A bundle validated with TTA (``"tta": true``) deploys with it; ``--no-tta`` / ``--tta`` override,
    and the run record says which was used."""
    bundle = bundle_factory()
    meta = json.loads((bundle / "model.json").read_text())
    (bundle / "model.json").write_text(json.dumps({**meta, "tta": True}))
    (tmp_path / "in").mkdir()
    save_nifti(tmp_path / "in" / "a.nii.gz", _ramp((9, 8, 7)), AFFINES["oblique"])
    used = {}
    for flags in ([], ["--no-tta"], ["--tta"]):
        out = tmp_path / ("out" + "".join(flags))
        assert main([str(bundle), "-i", str(tmp_path / "in"), "-o", str(out), *flags]) == 0
        used[" ".join(flags)] = json.loads((out / "predictions.json").read_text())["model"]["tta"]
    assert used == {"": True, "--no-tta": False, "--tta": True}


def test_temp_files_of_killed_runs_are_swept_once_an_hour_old(
    tmp_path: Path, bundle_factory: Callable[..., Path]
) -> None:
    """A run killed mid-write leaves a ``.tmp-*`` file; the next run removes it once it is old enough
    not to be another shard's write in progress, and leaves younger ones and everything else alone."""
    import os
    import time

    (tmp_path / "in").mkdir()
    save_nifti(tmp_path / "in" / "a.nii.gz", _ramp((9, 8, 7)), AFFINES["ras"])
    out = tmp_path / "out"
    (out / "preview").mkdir(parents=True)
    old, old_preview = out / f"{TEMP_PREFIX}b.nii.gz.1a2b.nii.gz", out / "preview" / f"{TEMP_PREFIX}b.png.9f.png"
    young, other = out / f"{TEMP_PREFIX}c.nii.gz.3c4d.nii.gz", out / "notes.txt"
    for path in (old, old_preview, young, other):
        path.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    for path in (old, old_preview, other):
        os.utime(path, (two_hours_ago, two_hours_ago))
    assert main([str(bundle_factory()), "-i", str(tmp_path / "in"), "-o", str(out)]) == 0
    assert not old.exists() and not old_preview.exists()
    assert young.exists() and other.exists() and (out / "a.nii.gz").is_file()
