"""Tiny nnU-Net models, planned and trained by nnU-Net itself, shared by the parity tests.

One session fixture writes three synthetic raw datasets (3D isotropic MR, 3D anisotropic CT,
region-based with a zero background), plans and preprocesses them with nnU-Net's planner, and
trains five models for a few iterations (isotropic 3d_fullres folds 0 and 1, isotropic 2d,
anisotropic 3d_fullres, regions 3d_fullres), each step in one child process (``oracle.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ORACLE = Path(__file__).with_name("oracle.py")
ISO, ANISO, REGIONS = 501, 502, 503
NAMES = {ISO: "Dataset501_Iso", ANISO: "Dataset502_AnisoCT", REGIONS: "Dataset503_Regions"}
ITERATIONS = 3


def sphere_case(shape: tuple[int, ...], centre: np.ndarray, radius: float, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """A label map (outer shell 1, core 2) and its distance field. Shape: ``shape``."""
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    label = (distance < radius).astype(np.uint8) + (distance < radius / 2)
    return label, distance


def save(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def iso_image(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (label * 1.0 + rng.normal(0, 0.4, label.shape) + 3.0).astype(np.float32)


def ct_image(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (-300.0 + 250.0 * label + rng.normal(0, 60, label.shape)).astype(np.float32)


def region_images(label: np.ndarray, distance: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Two channels, zero outside a 'head' ellipsoid (nnU-Net crops it and masks its z-score)."""
    head = distance < distance.max() * 0.45
    return [np.where(head, label * k + rng.normal(0, 0.3, label.shape) + 2, 0).astype(np.float32) for k in (1.0, -0.7)]


def write_dataset(raw: Path, dataset: int, rng: np.random.Generator) -> None:
    root = raw / NAMES[dataset]
    for index in range(4):
        if dataset == ANISO:
            # the low-resolution axis stored first: last in nnU-Net's reversed order, so its planner
            # moves it to the front (transpose_forward [2, 0, 1])
            shape, affine = (9, 32, 36), np.diag([4.0, 1.0, 1.0, 1.0])
            label, _ = sphere_case(shape, np.array([4.5, 16, 18]) + rng.uniform(-3, 3, 3) * [0.3, 1, 1], 11, rng)
            images = [ct_image(label, rng)]
        else:
            shape, affine = (36, 32, 28), np.eye(4)
            label, distance = sphere_case(shape, np.array(shape) / 2 + rng.uniform(-3, 3, 3), 8, rng)
            images = region_images(label, distance, rng) if dataset == REGIONS else [iso_image(label, rng)]
        for channel, image in enumerate(images):
            save(root / "imagesTr" / f"case{index}_{channel:04d}.nii.gz", image, affine)
        save(root / "labelsTr" / f"case{index}.nii.gz", label, affine)
    channels = {"0": "CT"} if dataset == ANISO else ({"0": "MR", "1": "MR2"} if dataset == REGIONS else {"0": "MR"})
    labels = ({"background": 0, "whole": [1, 2], "core": 2} if dataset == REGIONS
              else {"background": 0, "shell": 1, "core": 2} if dataset == ISO else {"background": 0, "organ": 1, "core": 2})
    meta = {"channel_names": channels, "labels": labels, "numTraining": 4, "file_ending": ".nii.gz"}
    if dataset == REGIONS:
        meta["regions_class_order"] = [1, 2]
    (root / "dataset.json").write_text(json.dumps(meta))


def run_oracle(env: dict[str, str], step: str, jobs: list, where: Path) -> None:
    jobs_file = where / f"{step}_jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    done = subprocess.run([sys.executable, str(ORACLE), step, str(jobs_file)], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, f"nnU-Net {step} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="session")
def nnunet_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Result folders of the five trained models, by name, plus ``env`` (nnU-Net's variables)."""
    pytest.importorskip("nnunetv2", reason="nnunetv2 is the parity oracle (pip install -e '.[dev]')")
    root = tmp_path_factory.mktemp("nnunet")
    env = {**os.environ, "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "pre"),
           "nnUNet_results": str(root / "results"), "nnUNet_compile": "f", "OMP_NUM_THREADS": "2"}
    rng = np.random.default_rng(0)
    for dataset in NAMES:
        write_dataset(root / "raw", dataset, rng)
    run_oracle(env, "plan", [[ISO, ["3d_fullres", "2d"]], [ANISO, ["3d_fullres"]], [REGIONS, ["3d_fullres"]]], root)
    for dataset in NAMES:  # a fixed split: training never depends on nnU-Net's random one
        (root / "pre" / NAMES[dataset] / "splits_final.json").write_text(json.dumps(
            [{"train": ["case0", "case1", "case2"], "val": ["case3"]},
             {"train": ["case1", "case2", "case3"], "val": ["case0"]}]))
    run_oracle({**env, "nnUNet_n_proc_DA": "0"}, "train",
               [[ISO, "3d_fullres", 0, ITERATIONS], [ISO, "3d_fullres", 1, ITERATIONS], [ISO, "2d", 0, ITERATIONS],
                [ANISO, "3d_fullres", 0, ITERATIONS], [REGIONS, "3d_fullres", 0, ITERATIONS]], root)
    results = root / "results"
    folder = {name: results / NAMES[d] / f"nnUNetTrainerTiny__nnUNetPlans__{c}"
              for name, d, c in (("iso", ISO, "3d_fullres"), ("iso_2d", ISO, "2d"), ("aniso_ct", ANISO, "3d_fullres"),
                                 ("regions", REGIONS, "3d_fullres"))}
    return {**folder, "root": root, "env": env}  # type: ignore[dict-item]
