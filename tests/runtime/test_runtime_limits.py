"""Issue 14 item 3: sizes are checked before allocating; the bad case fails in one line, the rest go on."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from runtime_helpers import save_nifti

from seg_runtime.cli import main
from seg_runtime.io import read_image
from seg_runtime.preprocess import PreprocessSpec

_HUGE = (4000, 4000, 4000)  # 64e9 voxels: hundreds of GB if anything believed it


def _run(bundle: Path, src: Path, out: Path, *extra: str) -> dict[str, dict]:
    """seg-run over ``src`` under tracemalloc; returns the manifest's cases by id."""
    tracemalloc.start()
    try:
        code = main([str(bundle), "-i", str(src), "-o", str(out), "--provider", "cpu", "--no-progress", *extra])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 1
    assert peak < 200 * 2**20, f"peak Python allocation {peak / 2**20:.0f} MiB: something was allocated"
    return {c["id"]: c for c in json.loads((out / "predictions.json").read_text())["cases"]}


@pytest.mark.parametrize(
    ("target", "bad_spacing", "good_spacing"),
    [
        pytest.param([0.05] * 3, 1.0, 0.05, id="tiny-target-spacing"),
        pytest.param([1.0] * 3, 20.0, 1.0, id="input-spacing-makes-grid-huge"),
    ],
)
def test_huge_resampled_grid_fails_the_case_only(
    tmp_path: Path, bundle_factory: Callable[..., Path], target: list[float], bad_spacing: float,
    good_spacing: float,
) -> None:
    spec = PreprocessSpec(orientation="RAS", target_spacing=target, normalization=[{"scheme": "none"}])
    bundle = bundle_factory(preprocess=spec)
    src = tmp_path / "in"
    src.mkdir()
    # 80^3 voxels at 20x the model's spacing (the most it accepts) -> a 1600^3 model grid (4e9 voxels,
    # ~80 GiB): must fail before resampling.
    save_nifti(src / "bad.nii.gz", np.ones((80, 80, 80), np.float32), np.diag([bad_spacing] * 3 + [1.0]))
    save_nifti(src / "good.nii.gz", np.full((6, 6, 6), 1.5, np.float32), np.diag([good_spacing] * 3 + [1.0]))
    cases = _run(bundle, src, tmp_path / "out", "--max-memory", "4")
    assert cases["good"]["status"] == "ok" and (tmp_path / "out" / "good.nii.gz").is_file()
    error = cases["bad"]["error"]
    assert cases["bad"]["status"] == "failed" and "bad.nii.gz" in error
    assert "this case needs 53.4 GiB" in error and "memory limit of 4 GiB" in error


def _lying_nifti(path: Path) -> Path:
    """A valid NIfTI header claiming 4000^3 float32 voxels, followed by 8 voxels of data."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape(_HUGE)
    header["vox_offset"] = 352
    blob = header.binaryblock + b"\0" * 4 + np.zeros(8, np.float32).tobytes()
    path.write_bytes(gzip.compress(blob) if path.name.endswith(".gz") else blob)
    return path


def _lying_nrrd(path: Path, encoding: str) -> Path:
    header = (
        "NRRD0004\ntype: float\ndimension: 3\nsizes: 4000 4000 4000\n"
        f"encoding: {encoding}\nendian: little\n\n"
    ).encode()
    payload = np.zeros(8, np.float32).tobytes()
    path.write_bytes(header + (gzip.compress(payload) if encoding == "gzip" else payload))
    return path


def test_headers_claiming_huge_dims_fail_fast(tmp_path: Path, bundle_factory: Callable[..., Path]) -> None:
    bundle = bundle_factory()
    src = tmp_path / "in"
    src.mkdir()
    liars = [
        _lying_nifti(src / "liar_nii.nii"),
        _lying_nifti(src / "liar_niigz.nii.gz"),
        _lying_nrrd(src / "liar_raw.nrrd", "raw"),
        _lying_nrrd(src / "liar_gz.nrrd", "gzip"),
    ]
    save_nifti(src / "good.nii.gz", np.full((6, 6, 6), 1.5, np.float32), np.eye(4))
    # A limit far above the claims: the header-against-file check alone must stop them.
    cases = _run(bundle, src, tmp_path / "out", "--max-memory", "100000")
    assert cases["good"]["status"] == "ok" and (tmp_path / "out" / "good.nii.gz").is_file()
    for path in liars:
        case = cases[path.name.split(".")[0]]
        assert case["status"] == "failed" and path.name in case["error"]
        assert "truncated or corrupt: the header claims" in case["error"]
        assert "(4000, 4000, 4000)" in case["error"] or "(64000000000,)" in case["error"]


def test_memory_limit_applies_to_an_honest_header(tmp_path: Path) -> None:
    path = save_nifti(tmp_path / "big.nii.gz", np.zeros((64, 64, 64), np.float32), np.eye(4))
    with pytest.raises(ValueError, match=r"big.nii.gz: the image of shape \(64, 64, 64\) needs .* memory limit"):
        read_image(path, max_bytes=2**20)
    assert read_image(path, max_bytes=2**30)[0].shape == (64, 64, 64)


def test_absurd_target_spacing_is_rejected_at_bundle_load(
    tmp_path: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = bundle_factory()
    meta = json.loads((bundle / "model.json").read_text())
    meta["preprocess"]["target_spacing"] = [1e-6, 1e-6, 1e-6]
    (bundle / "model.json").write_text(json.dumps(meta))
    (tmp_path / "in").mkdir()
    save_nifti(tmp_path / "in" / "a.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
    assert main([str(bundle), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seg-run: error:") and "target_spacing" in err and "Traceback" not in err
