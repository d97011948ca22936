"""seg-run on imported nnU-Net models against nnU-Net's own predictor (integration tier).

Models trained briefly by nnU-Net (``conftest.py``); inputs larger than the training patches (so
patches overlap), at other spacings (so images and logits are resampled; the anisotropic model's
low-resolution axis apart, and moved first by the plans' ``transpose_forward``), with flipped and
oblique affines. nnU-Net predicts with float32 result
arrays (``oracle.py``: the only change, the precision seg-runtime blends in); a last test checks
that seg-run is as close to nnU-Net as shipped (float16 accumulation) as that float32 run is.

Compared in the original geometry: label agreement >= 99.9 % of the voxels written by seg-run,
probabilities within 1e-3 (in process, the stages seg-run runs; its written probability file is
8-bit, within 1e-3 + 1/510).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import ct_image, iso_image, region_images, run_oracle, save, sphere_case

pytestmark = pytest.mark.integration

# name: (model, folds, mirror, inputs)
CONFIGS = {
    "iso_3d": ("iso", "0", False, "iso"),
    "iso_3d_mirror": ("iso", "0", True, "iso_one"),
    "iso_3d_two_folds": ("iso", "0,1", False, "iso_one"),
    "iso_2d_mirror": ("iso_2d", "0", True, "iso_thin"),
    "aniso_ct": ("aniso_ct", "0", False, "aniso"),
    "regions_mirror": ("regions", "0", True, "regions"),
}


def _rotation(degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    affine = np.eye(4)
    affine[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return affine


def _write_inputs(root: Path) -> dict[str, Path]:
    rng = np.random.default_rng(7)
    folders = {kind: root / f"in_{kind}" for kind in ("iso", "iso_one", "iso_thin", "aniso", "regions")}
    flipped = np.diag([-1.1, 0.9, 1.0, 1.0])
    flipped[:3, 3] = [40, -5, 3]
    oblique = _rotation(20) @ np.diag([1.0, 1.2, 0.9, 1.0])
    for name, affine in (("flipped", flipped), ("oblique", oblique)):
        label, _ = sphere_case((46, 38, 34), np.array([23, 19, 17]), 9, rng)
        save(folders["iso"] / f"{name}_0000.nii.gz", iso_image(label, rng), affine)
    label, _ = sphere_case((40, 36, 31), np.array([20, 18, 15]), 9, rng)
    save(folders["iso_one"] / "oblique_0000.nii.gz", iso_image(label, rng), oblique)
    label, _ = sphere_case((44, 38, 6), np.array([22, 19, 3]), 9, rng)  # 6 slices for the 2d model
    save(folders["iso_thin"] / "thin_0000.nii.gz", iso_image(label, rng), flipped)
    label, _ = sphere_case((8, 40, 44), np.array([4, 20, 22]), 12, rng)
    save(folders["aniso"] / "aniso_0000.nii.gz", ct_image(label, rng), np.diag([5.0, 0.8, 0.8, 1.0]))
    label, distance = sphere_case((44, 38, 34), np.array([22, 19, 17]), 9, rng)
    for channel, image in enumerate(region_images(label, distance, rng)):
        save(folders["regions"] / f"heads_{channel:04d}.nii.gz", image, np.diag([0.9, 1.1, 1.0, 1.0]))
    return folders


def _cli(*args: str) -> None:
    from seg.cli import main

    assert main(list(args)) == 0, f"seg {args[0]} failed"


def _seg_run(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "seg_runtime", *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"seg-run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


@pytest.fixture(scope="session")
def predictions(nnunet_models: dict) -> dict[str, dict[str, Path]]:
    """For each config: the bundle, nnU-Net's outputs (float32 results) and seg-run's outputs."""
    root, env = nnunet_models["root"], nnunet_models["env"]
    inputs = _write_inputs(root)
    jobs, out = [], {}
    for name, (model, folds, mirror, kind) in CONFIGS.items():
        bundle = root / "bundles" / name
        _cli("import-nnunet", str(nnunet_models[model]), "-o", str(bundle), "--folds", *folds.split(","))
        out[name] = {"bundle": bundle, "inputs": inputs[kind], "nnunet": root / "nnunet" / name,
                     "seg": root / "seg" / name, "mirror": mirror}
        jobs.append([str(nnunet_models[model]), str(inputs[kind]), str(out[name]["nnunet"]), folds, mirror, "fp32"])
        _seg_run("predict", str(bundle), "-i", str(inputs[kind]), "-o", str(out[name]["seg"]),
                 "--tta" if mirror else "--no-tta", "--save-probabilities")
    shipped = root / "nnunet" / "iso_3d_fp16"
    jobs.append([str(nnunet_models["iso"]), str(inputs["iso"]), str(shipped), "0", False, "fp16"])
    run_oracle(env, "predict", jobs, root)
    out["iso_3d"]["shipped"] = shipped
    return out


def _nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj)


def _nnunet_probabilities(path: Path, ndim: int) -> np.ndarray:
    """nnU-Net's saved probabilities in the stored index order. Shape: [K, *S]"""
    probabilities = np.load(path)["probabilities"].astype(np.float32)
    return np.transpose(probabilities, (0, *range(ndim, 0, -1)))


def _stage_probabilities(bundle: Path, image_files: list[Path], mirror: bool) -> np.ndarray:
    """seg-run's stages in process, probabilities kept as floats. Shape: [K, *S]"""
    from seg_runtime.bundle import load_bundle
    from seg_runtime.cases import Case
    from seg_runtime.options import PredictOptions
    from seg_runtime.session import OnnxBackend
    from seg_runtime.stages import CasePipeline, infer_case, load_case

    backend = OnnxBackend(bundle, provider="cpu")
    pipeline = CasePipeline.resolve(load_bundle(bundle), PredictOptions(tta=mirror))
    loaded = load_case(Case("case", image_files, "nnunet"), pipeline)
    scores = infer_case(loaded, pipeline, backend.predict_batch)
    return pipeline.blend.probabilities(pipeline.preprocessor.restore(scores, loaded.state))


def _cases(folder: Path) -> dict[str, list[Path]]:
    cases: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*_0000.nii.gz")):
        case = path.name[: -len("_0000.nii.gz")]
        cases[case] = sorted(folder.glob(f"{case}_*.nii.gz"))
    return cases


@pytest.mark.parametrize("name", list(CONFIGS))
def test_seg_run_matches_nnunets_predictor(predictions: dict, name: str) -> None:
    run = predictions[name]
    for case, files in _cases(run["inputs"]).items():
        ours, theirs = _nifti(run["seg"] / f"{case}.nii.gz"), _nifti(run["nnunet"] / f"{case}.nii.gz")
        assert ours.shape == theirs.shape
        agreement = float((ours == theirs).mean())
        assert agreement >= 0.999, f"{name}/{case}: labels agree on {agreement:.4%}"
        assert len(np.unique(theirs)) > 1, f"{name}/{case}: a trivial prediction proves nothing"
        reference = _nnunet_probabilities(run["nnunet"] / f"{case}.npz", ours.ndim)
        floats = _stage_probabilities(run["bundle"], files, run["mirror"])
        assert float(np.abs(floats - reference).max()) <= 1e-3, f"{name}/{case}: probabilities differ"
        written = np.moveaxis(_nifti(run["seg"] / f"{case}_probabilities.nii.gz").astype(np.float32), -1, 0)
        assert float(np.abs(written - reference).max()) <= 1e-3 + 1 / 510


def test_as_close_to_nnunet_as_shipped_as_its_float32_run(predictions: dict) -> None:
    """nnU-Net as shipped rounds blended logits to float16; seg-run (float32) is no further from it
    than nnU-Net's own float32 run, voxel for voxel on labels and at most on probabilities."""
    run = predictions["iso_3d"]
    for case in _cases(run["inputs"]):
        shipped = _nnunet_probabilities(run["shipped"] / f"{case}.npz", 3)
        float32 = _nnunet_probabilities(run["nnunet"] / f"{case}.npz", 3)
        ours = np.moveaxis(_nifti(run["seg"] / f"{case}_probabilities.nii.gz").astype(np.float32), -1, 0)
        assert np.abs(ours - shipped).max() <= np.abs(float32 - shipped).max() + 1 / 510 + 1e-3
        labels = _nifti(run["shipped"] / f"{case}.nii.gz")
        ours_labels, float32_labels = _nifti(run["seg"] / f"{case}.nii.gz"), _nifti(run["nnunet"] / f"{case}.nii.gz")
        assert (ours_labels != labels).sum() <= (float32_labels != labels).sum() + 0.0005 * labels.size


def test_the_configurations_exercise_what_they_are_named_for(predictions: dict) -> None:
    """The planner's choices these tests rely on: a transposed, anisotropic CT model; a masked,
    cropped region model; a 2d model mirrored in-plane only."""
    from seg_runtime.bundle import load_bundle
    from seg_runtime.nnunet.resample import separate_axis

    aniso = load_bundle(predictions["aniso_ct"]["bundle"])
    spec = aniso.preprocess
    assert spec.transpose_forward == [2, 0, 1] and spec.normalization[0]["scheme"] == "ct"
    assert separate_axis((5.0, 0.8, 0.8), spec.target_spacing, spec.resample_data) == 0
    regions = load_bundle(predictions["regions_mirror"]["bundle"])
    assert regions.outputs == "regions" and all(entry["use_mask"] for entry in regions.preprocess.normalization)
    flat = load_bundle(predictions["iso_2d_mirror"]["bundle"])
    assert flat.patch_size[0] == 1 and flat.mirror_axes == [1, 2]
