"""Fixtures for the data tests: tiny real image files written into tmp_path (no mocks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

# A tilted, flipped, anisotropic grid: equality checks must compare real affines, not identities.
AFFINE = np.array(
    [[-0.9, 0.1, 0.0, 12.0], [0.1, 0.9, 0.0, -7.5], [0.0, 0.0, 2.5, 30.0], [0.0, 0.0, 0.0, 1.0]]
)


class Files:
    """Writers for the few formats the tests need."""

    @staticmethod
    def nifti(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.asarray(array), affine), path)
        return path

    @staticmethod
    def png(path: Path, array: np.ndarray) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
        return path

    @staticmethod
    def json(path: Path, payload: dict[str, Any]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload))
        return path

    @staticmethod
    def volume(shape: tuple[int, ...] = (8, 7, 5), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A float32 image and a uint8 label (values 0, 1, 2) of one shape."""
        rng = np.random.default_rng(seed)
        label = np.zeros(shape, dtype=np.uint8)
        label[1:4, 1:4] = 1
        label[4:6, 4:6] = 2
        return (rng.normal(size=shape) + label).astype(np.float32), label


@pytest.fixture
def files() -> type[Files]:
    return Files


@pytest.fixture
def nnunet_root(tmp_path: Path, files: type[Files]) -> Path:
    """An nnU-Net v2 raw dataset: 2 channels, 3 training cases (ids sort numerically), 1 test case."""
    root = tmp_path / "Dataset001_Tiny"
    files.json(
        root / "dataset.json",
        {
            "channel_names": {"0": "T1", "1": "T2"},
            "labels": {"background": 0, "a": 1, "b": 2},
            "numTraining": 3,
            "file_ending": ".nii.gz",
        },
    )
    for i, case in enumerate(["case10", "case2", "case1"]):
        image, label = files.volume(seed=i)
        files.nifti(root / "imagesTr" / f"{case}_0000.nii.gz", image)
        files.nifti(root / "imagesTr" / f"{case}_0001.nii.gz", image * 2)
        files.nifti(root / "labelsTr" / f"{case}.nii.gz", label)
    image, label = files.volume(seed=9)
    files.nifti(root / "imagesTs" / "case99_0000.nii.gz", image)
    files.nifti(root / "imagesTs" / "case99_0001.nii.gz", image)
    return root
