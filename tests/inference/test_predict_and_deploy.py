"""seg predict (torch) and seg-run (onnxruntime) on the same folders: geometry, parity, isolation."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from seg.cli import main as seg
from seg.engine.fit import fit
from seg_runtime.cli import main as seg_run

from ..conftest import tiny_config


@pytest.fixture(scope="module", params=[3, 2], ids=["3d", "2d"])
def trained(request, tmp_path_factory) -> tuple[int, Path, Path]:
    """A tiny trained run, its data root and its exported bundle."""
    dims = request.param
    tmp = tmp_path_factory.mktemp(f"run{dims}d")
    cfg = tiny_config(tmp, dims, "train.epochs=1")
    result = fit(cfg, progress=False)
    assert seg(["export", str(result.run_dir), "-o", str(tmp / "bundle")]) == 0
    return dims, Path(cfg.data.root), tmp


def _labels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)) if path.suffix == ".png" else np.asarray(nib.load(path).dataobj)


def test_predict_writes_input_geometry_and_matches_runtime(trained) -> None:
    dims, root, tmp = trained
    images = root / "imagesTs"
    assert seg(["predict", "--model", str(tmp / "runs" / f"demo{dims}d"), "-i", str(images),
                "-o", str(tmp / "torch"), "--save-probabilities", "--preview", "--backend", "torch"]) == 0
    assert seg_run([str(tmp / "bundle"), "-i", str(images), "-o", str(tmp / "onnx"), "--provider", "cpu",
                    "--save-probabilities"]) == 0
    ext = ".nii.gz" if dims == 3 else ".png"
    inputs = sorted(images.iterdir())
    assert inputs
    for src in inputs:
        cid = src.name.replace("_0000" + ext, "")
        a, b = tmp / "torch" / f"{cid}{ext}", tmp / "onnx" / f"{cid}{ext}"
        la, lb = _labels(a), _labels(b)
        if dims == 3:
            ref = nib.load(src)
            assert np.array_equal(nib.load(a).affine, ref.affine)  # exactly the input's geometry
            assert la.shape == ref.shape
        else:
            assert la.shape == np.asarray(Image.open(src)).shape
        assert np.mean(la == lb) >= 0.999
        with Image.open(tmp / "torch" / "preview" / f"{cid}.png") as preview:  # seg predict --preview
            assert preview.format == "PNG" and preview.mode == "RGB"
    torch_manifest = json.loads((tmp / "torch" / "predictions.json").read_text())
    assert {c["status"] for c in torch_manifest["cases"]} == {"ok"}
    assert torch_manifest["tool"] == "seg predict"


def test_rerun_skips_and_bad_case_is_isolated(trained, tmp_path: Path) -> None:
    dims, root, tmp = trained
    if dims == 2:
        pytest.skip("the runtime's own tests cover 2D bad inputs")
    folder = tmp_path / "in"
    folder.mkdir()
    good = sorted((root / "imagesTs").iterdir())[0]
    (folder / good.name).write_bytes(good.read_bytes())
    (folder / "broken_0000.nii.gz").write_bytes(good.read_bytes()[:200])  # truncated
    model = str(tmp / "runs" / "demo3d")
    out = tmp_path / "out"
    assert seg(["predict", "--model", model, "-i", str(folder), "-o", str(out)]) == 1
    manifest = json.loads((out / "predictions.json").read_text())
    status = {c["id"]: c["status"] for c in manifest["cases"]}
    assert status == {good.name.replace("_0000.nii.gz", ""): "ok", "broken": "failed"}
    assert "broken_0000.nii.gz" in next(c["error"] for c in manifest["cases"] if c["id"] == "broken")
    assert not list(out.glob(".*tmp*"))
    seg(["predict", "--model", model, "-i", str(folder), "-o", str(out)])
    again = json.loads((out / "predictions.json").read_text())
    assert {c["id"]: c["status"] for c in again["cases"]}[good.name.replace("_0000.nii.gz", "")] == "skipped"


def test_keep_largest_removes_islands_only(trained, tmp_path: Path, capsys) -> None:
    from scipy import ndimage

    dims, root, tmp = trained
    images, ext = root / "imagesTs", (".nii.gz" if dims == 3 else ".png")
    model, bundle = str(tmp / "runs" / f"demo{dims}d"), str(tmp / "bundle")
    assert seg_run([bundle, "-i", str(images), "-o", str(tmp_path / "raw"), "--provider", "cpu"]) == 0
    assert seg_run([bundle, "-i", str(images), "-o", str(tmp_path / "onnx"), "--provider", "cpu",
                    "--keep-largest", "organ"]) == 0
    assert seg(["predict", "--model", model, "-i", str(images), "-o", str(tmp_path / "torch"),
                "--keep-largest", "organ", "--backend", "torch"]) == 0
    removed, islands = 0, 0
    for raw_path in sorted((tmp_path / "raw").glob(f"*{ext}")):
        raw, kept = _labels(raw_path), _labels(tmp_path / "onnx" / raw_path.name)
        changed = raw != kept
        assert (raw[changed] == 2).all() and (kept[changed] == 0).all()  # only organ voxels, to background
        assert ndimage.label(kept == 2)[1] <= 1
        removed += int(changed.sum())
        islands += max(0, ndimage.label(raw == 2)[1] - 1)
        assert np.mean(kept == _labels(tmp_path / "torch" / raw_path.name)) >= 0.999
    capsys.readouterr()
    assert seg_run([bundle, "-i", str(images), "-o", str(tmp_path / "bad"), "--keep-largest", "liver"]) == 2
    assert "keep_largest" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert (removed > 0) == (islands > 0)  # islands in the raw output were there to remove


def test_bundle_remove_small_drops_only_components_below_its_volume(trained, tmp_path: Path) -> None:
    """A bundle's remove_small (mm³ of the input's own grid; pixels for PNG) is applied by seg-run."""
    import shutil

    from scipy import ndimage

    dims, root, tmp = trained
    images, ext = root / "imagesTs", (".nii.gz" if dims == 3 else ".png")
    bundle = tmp_path / "bundle"
    shutil.copytree(tmp / "bundle", bundle)
    assert seg_run([str(bundle), "-i", str(images), "-o", str(tmp_path / "raw"), "--provider", "cpu"]) == 0
    raw = {p.name: _labels(p) for p in sorted((tmp_path / "raw").glob(f"*{ext}"))}
    volumes = {}
    for path in sorted(images.glob(f"*{ext}")):
        spacing = nib.load(path).header.get_zooms()[:3] if dims == 3 else (1.0, 1.0)
        volumes[path.name.replace("_0000", "")] = float(np.prod(spacing))
    sizes = sorted(float(n) * volumes[name] for name, a in raw.items()
                   for n in np.bincount(ndimage.label(a == 2)[0].ravel())[1:])
    assert len(sizes) >= 2, "the tiny model should predict organ components of several sizes"
    threshold = (sizes[0] + sizes[-1]) / 2  # between the smallest and the largest component
    meta = json.loads((bundle / "model.json").read_text())
    meta["remove_small"] = {"organ": threshold}
    (bundle / "model.json").write_text(json.dumps(meta))
    assert seg_run([str(bundle), "-i", str(images), "-o", str(tmp_path / "small"), "--provider", "cpu"]) == 0
    removed = 0
    for name, before in raw.items():
        after = _labels(tmp_path / "small" / name)
        changed = before != after
        assert (before[changed] == 2).all() and (after[changed] == 0).all()  # only organ voxels, to background
        components, _ = ndimage.label(before == 2)
        for index in range(1, int(components.max()) + 1):
            part = components == index
            gone = part.sum() * volumes[name] < threshold
            assert (after[part] == 0).all() if gone else (after[part] == 2).all()
            removed += int(gone)
    assert removed >= 1


def test_evaluate_matches_hand_computed_dice(tmp_path: Path, capsys) -> None:
    ref = np.zeros((10, 10, 4), np.uint8)
    ref[2:6, 2:6, :2] = 1  # 32 voxels
    pred = np.zeros_like(ref)
    pred[2:6, 4:8, :2] = 1  # 32 voxels, 16 shared -> Dice 0.5
    for folder, arr in (("pred", pred), ("ref", ref)):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / folder / "case1.nii.gz")
    assert seg(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref")]) == 0
    result = json.loads((tmp_path / "pred" / "evaluation.json").read_text())
    case = result["cases"][0]
    assert case["dice_class_1"] == pytest.approx(0.5)
    assert case["hd95_class_1"] == pytest.approx(2.0)  # the masks are shifted by 2 voxels
    assert 0.0 < case["nsd_class_1"] < 1.0
    assert "0.5000" in capsys.readouterr().out


def test_predict_bad_model_path_is_one_line(tmp_path: Path, capsys) -> None:
    assert seg(["predict", "--model", str(tmp_path / "nope"), "-i", str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not found" in err


def test_predict_dicom_seg_without_highdicom_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    import builtins
    import sys

    real_import = builtins.__import__

    def no_highdicom(name, *args, **kwargs):
        if name.split(".")[0] == "highdicom":
            raise ImportError("No module named 'highdicom'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "highdicom", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_highdicom)
    code = seg(["predict", "--model", str(tmp_path / "nope"), "-i", str(tmp_path), "-o", str(tmp_path / "o"),
                "--dicom-seg"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == ("seg predict: error: --dicom-seg needs the highdicom package: "
                                 'pip install "seg[dicom]"')


def test_seg_predict_empty_folder_and_output_format(trained, tmp_path: Path, capsys) -> None:
    """Issue 14 items 6 and 7 through seg predict: no cases -> exit 2 in one line; --output-format."""
    from seg_runtime.io import read_image

    dims, root, tmp = trained
    run = str(tmp / "runs" / f"demo{dims}d")
    (tmp_path / "empty").mkdir()
    assert seg(["predict", "--model", run, "-i", str(tmp_path / "empty"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("seg predict: error:") and "no cases found" in err
    src = sorted((root / "imagesTs").iterdir())[0]
    fmt = "nrrd" if dims == 3 else "mha"
    assert seg(["predict", "--model", run, "-i", str(src), "-o", str(tmp_path / "fmt"), "--output-format", fmt,
                "--threads", "1", "--no-progress"]) == 0
    (written,) = (tmp_path / "fmt").glob(f"*.{fmt}")
    _, expected = read_image(src)
    labels, geometry = read_image(written)
    assert geometry.shape == expected.shape and labels.max() < 256
    np.testing.assert_allclose(geometry.affine, expected.affine, atol=1e-6)


def test_seg_predict_onnx_backend_matches_torch(trained, tmp_path: Path) -> None:
    """Issue 14 item 9: --backend onnx (in-memory export, onnxruntime on the CPU) matches --backend torch."""
    dims, root, tmp = trained
    run = str(tmp / "runs" / f"demo{dims}d")
    images = root / "imagesTs"
    for backend in ("torch", "onnx"):
        assert seg(["predict", "--model", run, "-i", str(images), "-o", str(tmp_path / backend), "--device", "cpu",
                    "--backend", backend, "--save-probabilities", "--no-progress"]) == 0
    ext = ".nii.gz" if dims == 3 else ".png"
    outputs = sorted((tmp_path / "torch").glob(f"*{ext}"))
    assert outputs
    for path in outputs:
        if "_probabilities" in path.name:
            continue
        assert np.mean(_labels(path) == _labels(tmp_path / "onnx" / path.name)) >= 0.999
    prob = ".npz" if dims == 2 else ".nii.gz"
    for path in sorted((tmp_path / "torch").glob(f"*_probabilities{prob}")):
        if dims == 2:
            a, b = np.load(path)["probabilities"], np.load(tmp_path / "onnx" / path.name)["probabilities"]
        else:
            a, b = nib.load(path).get_fdata(), nib.load(tmp_path / "onnx" / path.name).get_fdata()
        assert np.abs(a.astype(np.float32) - b.astype(np.float32)).max() <= 2 / 255 + 1e-3


def test_backend_auto_uses_onnxruntime_on_the_cpu(trained, caplog) -> None:
    import logging

    from seg.inference import load_backend
    from seg.inference.onnx_backend import InMemoryOnnxBackend, choose_backend

    dims, _, tmp = trained
    torch_backend = load_backend(tmp / "runs" / f"demo{dims}d", device="cpu")
    with caplog.at_level(logging.INFO, logger="seg.inference.onnx_backend"):
        chosen = choose_backend(torch_backend, "auto", threads=1)
    assert isinstance(chosen, InMemoryOnnxBackend) and chosen.bundle is torch_backend.bundle
    assert choose_backend(torch_backend, "torch") is torch_backend
    cfg = torch_backend.cfg
    x = np.random.default_rng(1).standard_normal((2, cfg.data.in_channels, *cfg.patch_size)).astype(np.float32)
    np.testing.assert_allclose(chosen.predict_batch(x), torch_backend.predict_batch(x), atol=cfg.export.tolerance)
    assert "onnxruntime backend" in caplog.text


def test_predict_on_ray_matches_the_local_loop(trained, capsys) -> None:
    """seg predict --engine ray: the torch model in a Ray actor, the same files as the local loop."""
    ray = pytest.importorskip("ray")
    dims, root, tmp = trained
    run = str(tmp / "runs" / f"demo{dims}d")
    images = root / "imagesTs"
    assert seg(["predict", "--model", run, "-i", str(images), "-o", str(tmp / "local"), "--backend", "torch"]) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        assert seg(["predict", "--model", run, "-i", str(images), "-o", str(tmp / "ray"),
                    "--engine", "ray", "--num-workers", "1"]) == 0
    finally:
        ray.shutdown()
    ext = ".nii.gz" if dims == 3 else ".png"
    written = sorted(p.name for p in (tmp / "local").glob(f"*{ext}"))
    assert written and written == sorted(p.name for p in (tmp / "ray").glob(f"*{ext}"))
    for name in written:
        np.testing.assert_array_equal(_labels(tmp / "ray" / name), _labels(tmp / "local" / name))
    capsys.readouterr()
    assert seg(["predict", "--summary", "-o", str(tmp / "ray")]) == 0
    assert f"cases     {len(written)}: {len(written)} ok, 0 failed" in capsys.readouterr().out


def _agreement(a: Path, b: Path) -> float:
    """Share of voxels on which two folders of label maps agree (every file of ``a``)."""
    files = sorted(p for p in a.iterdir() if p.suffix in (".gz", ".png"))
    assert files and all((b / f.name).is_file() for f in files)
    return float(np.mean([np.mean(_labels(f) == _labels(b / f.name)) for f in files]))


@pytest.mark.gpu
def test_cuda_predict_matches_cpu(trained, cuda, tmp_path: Path) -> None:
    """seg predict on CUDA (bf16 autocast) writes the labels the CPU's float32 path writes."""
    dims, root, tmp = trained
    model, images = str(tmp / "runs" / f"demo{dims}d"), str(root / "imagesTs")
    assert seg(["predict", "--model", model, "-i", images, "-o", str(tmp_path / "cpu"), "--device", "cpu",
                "--backend", "torch"]) == 0
    assert seg(["predict", "--model", model, "-i", images, "-o", str(tmp_path / "cuda"), "--device", "cuda"]) == 0
    agreement = _agreement(tmp_path / "cpu", tmp_path / "cuda")
    print(f"{dims}D seg predict cuda (bf16) vs cpu (fp32): {agreement:.5f} of voxels agree")
    assert agreement >= 0.99


@pytest.mark.gpu
def test_runtime_cuda_provider_matches_cpu(trained, tmp_path: Path) -> None:
    """seg-run --provider cuda runs the bundle on onnxruntime's CUDA provider (not a silent CPU
    fallback) and writes the CPU provider's labels."""
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (pip install onnxruntime-gpu)")
    dims, root, tmp = trained
    images = str(root / "imagesTs")
    for provider in ("cpu", "cuda"):
        assert seg_run([str(tmp / "bundle"), "-i", images, "-o", str(tmp_path / provider), "--provider", provider]) == 0
    manifest = json.loads((tmp_path / "cuda" / "predictions.json").read_text())
    assert manifest["model"]["providers"][0] == "CUDAExecutionProvider", manifest["model"]
    agreement = _agreement(tmp_path / "cpu", tmp_path / "cuda")
    print(f"{dims}D seg-run CUDA provider vs CPU provider: {agreement:.5f} of voxels agree")
    assert agreement >= 0.999


def test_seg_predict_statistics_equal_voxel_counts_times_voxel_size(trained, tmp_path: Path) -> None:
    """--statistics through seg predict (the torch backend): volumes (3D) or areas (2D) are the written label
    map's voxel counts times the input's voxel size; the CSV has a row per case, structure and channel."""
    from seg_runtime.io import read_image

    dims, root, tmp = trained
    out = tmp_path / "stats"
    assert seg(["predict", "--model", str(tmp / "runs" / f"demo{dims}d"), "-i", str(root / "imagesTs"), "-o",
                str(out), "--statistics", "--no-progress", "--backend", "torch"]) == 0
    ext = ".nii.gz" if dims == 3 else ".png"
    files = sorted((out / "statistics").glob("*.json"))
    assert files
    rows = (out / "statistics.csv").read_text().strip().splitlines()
    for path in files:
        stats = json.loads(path.read_text())
        labels, geometry = read_image(out / f"{stats['case']}{ext}")
        unit = float(np.prod(geometry.spacing[:dims]))
        assert stats["structures"]
        for entry in stats["structures"]:
            voxels = int(np.isin(labels, entry["labels"]).sum())
            assert entry["voxels"] == voxels
            size = entry["volume_ml"] * 1000 if dims == 3 else entry["area_mm2"]
            assert size == pytest.approx(voxels * unit, rel=1e-9)
    channels = len(json.loads(files[0].read_text())["channels"])
    assert len(rows) == 1 + sum(len(json.loads(p.read_text())["structures"]) for p in files) * channels
