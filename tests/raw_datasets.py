"""Tiny synthetic nnU-Net raw datasets written to disk (real NIfTI/PNG files + dataset.json)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image


def _case(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A blob (label 1) brighter than its noisy background. Returns (image float32, label uint8)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    centre = rng.uniform(0.35, 0.65, size=len(shape))[:, None] * np.array(shape)[:, None]
    dist = np.sqrt((((grid.reshape(len(shape), -1) - centre) / np.array(shape)[:, None]) ** 2).sum(0))
    label = (dist.reshape(shape) < 0.22).astype(np.uint8)
    image = rng.normal(0, 0.3, size=shape).astype(np.float32) + label * 2.0 + 1.0
    return image, label


def write_nnunet_raw(root: Path, *, dims: int, cases: int = 4, channels: int = 1) -> Path:
    """``root/imagesTr/case{i}_000{c}.ext``, ``labelsTr/``, ``dataset.json``; 3D 24³ NIfTI or 2D 64² PNG."""
    names = ["T2", "ADC"][:channels] if dims == 3 else ["EM"]
    ending = ".nii.gz" if dims == 3 else ".png"
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    for i in range(cases):
        image, label = _case((24, 24, 24) if dims == 3 else (64, 64), seed=i)
        for c in range(len(names)):
            channel = image * (1.0 + c)
            _write(root / "imagesTr" / f"case{i}_{c:04d}{ending}", channel if dims == 3 else channel * 60)
        _write(root / "labelsTr" / f"case{i}{ending}", label)
    meta = {"channel_names": {str(c): n for c, n in enumerate(names)}, "labels": {"background": 0, "lesion": 1},
            "numTraining": cases, "file_ending": ending}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _write(path: Path, array: np.ndarray) -> None:
    if path.suffix == ".png":
        Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(path)
    else:
        nib.save(nib.Nifti1Image(array.astype(np.float32 if array.dtype.kind == "f" else np.uint8),
                                 np.diag([1.5, 1.5, 1.5, 1.0])), path)
