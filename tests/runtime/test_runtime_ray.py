"""``--engine ray`` on a local Ray cluster: voxel-identical to the local loop, failures isolated."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import predict, save_nifti

from seg_runtime.cli import main
from seg_runtime.io import read_image
from seg_runtime.preprocess import PreprocessSpec
from seg_runtime.records import iter_records
from seg_runtime.session import OnnxBackend

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")


@pytest.fixture(scope="module", autouse=True)
def local_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def _volume_folder(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        affine = np.diag([0.9 + 0.1 * index, 1.1, 1.7, 1.0])
        save_nifti(folder / f"vol{index}.nii.gz", rng.normal(1.5, 1.0, (11, 9, 7)).astype(np.float32), affine)
    (folder / "corrupt.nii.gz").write_bytes(b"\x1f\x8bthis is not an image" * 10)
    return folder


def _png_folder(folder: Path, count: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for index in range(count):
        Image.fromarray(rng.integers(0, 255, (19, 23), dtype=np.uint8)).save(folder / f"slice{index}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return folder


def _labels(folder: Path) -> dict[str, np.ndarray]:
    found = {}
    for path in sorted(folder.iterdir()):
        if path.name.endswith((".nii.gz", ".png")):
            found[path.name] = read_image(path)[0]
    return found


def _statuses(out: Path) -> dict[str, str]:
    return {c["id"]: c["status"] for c in json.loads((out / "predictions.json").read_text())["cases"]}


@pytest.mark.parametrize("dims", [3, 2])
def test_ray_matches_the_local_loop(tmp_path: Path, bundle_factory: Callable[..., Path], dims: int) -> None:
    if dims == 3:
        src = _volume_folder(tmp_path / "in", 4)
        spec = PreprocessSpec(target_spacing=[1.3, 1.3, 1.3], normalization=[{"scheme": "zscore"}])
        bundle = bundle_factory(preprocess=spec, patch_size=[8, 8, 8])
    else:
        src = _png_folder(tmp_path / "in", 4)
        weight = np.array([[0.0], [0.02], [0.04]], np.float32)
        bundle = bundle_factory(spatial_dims=2, weight=weight, bias=np.array([0.0, -1.0, -5.0], np.float32),
                                preprocess=PreprocessSpec(normalization=[{"scheme": "none"}]))
    local = predict(OnnxBackend(bundle, provider="cpu"), src, tmp_path / "local", progress=False)
    code = main([str(bundle), "-i", str(src), "-o", str(tmp_path / "ray"), "--provider", "cpu",
                 "--engine", "ray", "--num-workers", "1", "--no-progress"])
    assert code == 1  # the corrupt case failed, and only it
    assert local.summary == {"ok": 4, "skipped": 0, "failed": 1}
    assert _statuses(tmp_path / "ray") == _statuses(tmp_path / "local")
    expected, got = _labels(tmp_path / "local"), _labels(tmp_path / "ray")
    assert sorted(got) == sorted(expected) and len(got) == 4
    for name, labels in expected.items():
        np.testing.assert_array_equal(got[name], labels, err_msg=name)
    failed = [r for r in iter_records(tmp_path / "ray" / "predictions.jsonl") if r.get("status") == "failed"]
    assert len(failed) == 1 and "cannot read" in failed[0]["error"]
    runs = [r for r in iter_records(tmp_path / "ray" / "predictions.jsonl") if r["type"] == "run"]
    assert runs[0]["model"]["engine"] == "ray"


def test_ray_rerun_skips_finished_cases(tmp_path: Path, bundle_factory: Callable[..., Path]) -> None:
    src = _volume_folder(tmp_path / "in", 3)
    predictor = OnnxBackend(bundle_factory(patch_size=[8, 8, 8]), provider="cpu")
    first = predict(predictor, src, tmp_path / "out", engine="ray", progress=False)
    assert first.summary == {"ok": 3, "skipped": 0, "failed": 1}
    (tmp_path / "out" / "vol1.nii.gz").write_bytes(b"truncated")  # not the file the record vouches for
    stamp = (tmp_path / "out" / "vol0.nii.gz").stat().st_mtime_ns
    second = predict(predictor, src, tmp_path / "out", engine="ray", progress=False)
    assert second.summary == {"ok": 1, "skipped": 2, "failed": 1}
    assert [c["id"] for c in second.cases if c["status"] == "ok"] == ["vol1"]
    assert (tmp_path / "out" / "vol0.nii.gz").stat().st_mtime_ns == stamp
    assert read_image(tmp_path / "out" / "vol1.nii.gz")[0].shape == (11, 9, 7)


def test_a_pool_that_would_starve_fails_in_one_line(
    tmp_path: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src = _volume_folder(tmp_path / "in", 1)
    for extra in (["--num-workers", "2"], ["--gpus-per-worker", "1"]):  # 2 CPUs, no GPU here
        code = main([str(bundle_factory()), "-i", str(src), "-o", str(tmp_path / "out"), "--engine", "ray",
                     "--provider", "cpu", *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
        assert ("leave no CPU" if "--num-workers" in extra else "GPUs") in err
