"""The built-in demo data: a real nnU-Net raw dataset on disk, deterministic and idempotent."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from seg.data.synthetic import LABELS, make_synthetic_dataset
from seg_runtime.io import read_image


def _arrays(root: Path) -> dict[str, np.ndarray]:
    return {
        str(p.relative_to(root)): read_image(p)[0]
        for p in sorted(root.rglob("*"))
        if p.suffix in (".gz", ".png")
    }


@pytest.fixture(scope="module")
def synth3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth3d"), spatial_dims=3, num_train=4, num_test=2)


def test_layout_and_dataset_json(synth3d: Path) -> None:
    meta = json.loads((synth3d / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "MRI"}
    assert meta["labels"] == LABELS and sorted(LABELS.values()) == [0, 1, 2]
    assert meta["numTraining"] == 4 and meta["file_ending"] == ".nii.gz"
    assert meta["seg_synthetic"]["seed"] == 0 and meta["seg_synthetic"]["spatial_dims"] == 3
    assert len(list((synth3d / "imagesTr").glob("*_0000.nii.gz"))) == 4
    assert len(list((synth3d / "labelsTr").glob("*.nii.gz"))) == 4
    assert len(list((synth3d / "imagesTs").glob("*_0000.nii.gz"))) == 2
    assert len(list((synth3d / "labelsTs").glob("*.nii.gz"))) == 2


def test_geometry_is_anisotropic_tilted_and_not_ras(synth3d: Path) -> None:
    shapes = set()
    for path in sorted((synth3d / "imagesTr").glob("*.nii.gz")):
        image, geometry = read_image(path)
        label, label_geometry = read_image(synth3d / "labelsTr" / path.name.replace("_0000", ""))
        assert image.shape == label.shape and 40 <= image.shape[0] <= 56 and 26 <= image.shape[2] <= 38
        assert np.allclose(geometry.spacing, (1.0, 1.0, 2.0))
        assert np.allclose(geometry.affine, label_geometry.affine)
        assert not np.allclose(geometry.affine[:3, :3], np.diag(np.diag(geometry.affine[:3, :3])))  # rotated
        assert np.abs(geometry.affine[:3, 3]).max() > 0
        assert nib.aff2axcodes(geometry.affine) != ("R", "A", "S")
        shapes.add(image.shape)
    assert len(shapes) > 1  # shapes vary per case


def test_every_case_holds_every_class_and_is_learnable(synth3d: Path) -> None:
    for path in sorted((synth3d / "labelsTr").glob("*.nii.gz")) + sorted(
        (synth3d / "labelsTs").glob("*.nii.gz")
    ):
        label = read_image(path)[0]
        image = read_image(
            synth3d / path.parent.name.replace("labels", "images") / path.name.replace(".nii", "_0000.nii")
        )[0]
        assert set(np.unique(label)) == {0, 1, 2}
        assert label.dtype == np.uint8 and image.dtype == np.float32 and np.isfinite(image).all()
        body = image > 0
        tissue = image[body & (label == 0)].mean()
        organ, lesion = image[label == 2].mean(), image[label == 1].mean()
        assert tissue < organ < lesion  # separable on average, overlapping under the noise
        assert image[label == 2].std() > 5


def test_same_seed_same_arrays_and_different_seed_differs(tmp_path: Path) -> None:
    a = _arrays(make_synthetic_dataset(tmp_path / "a", 3, num_train=2, num_test=1, seed=3))
    b = _arrays(make_synthetic_dataset(tmp_path / "b", 3, num_train=2, num_test=1, seed=3))
    c = _arrays(make_synthetic_dataset(tmp_path / "c", 3, num_train=2, num_test=1, seed=4))
    assert a.keys() == b.keys() == c.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not any(a[k].shape == c[k].shape and np.array_equal(a[k], c[k]) for k in a)


def test_idempotent_unless_parameters_change(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "d", 3, num_train=2, num_test=1)
    image = root / "imagesTr" / "synth_000_0000.nii.gz"
    stamp = image.stat().st_mtime_ns
    time.sleep(0.01)
    make_synthetic_dataset(root, 3, num_train=2, num_test=1)
    assert image.stat().st_mtime_ns == stamp
    image.unlink()  # an incomplete dataset is regenerated
    make_synthetic_dataset(root, 3, num_train=2, num_test=1)
    assert image.is_file()
    make_synthetic_dataset(root, 3, num_train=3, num_test=1)
    assert json.loads((root / "dataset.json").read_text())["seg_synthetic"]["num_train"] == 3
    assert (root / "imagesTr" / "synth_002_0000.nii.gz").is_file()


def test_3d_generation_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    make_synthetic_dataset(tmp_path / "fast", 3)
    assert time.perf_counter() - start < 4.0  # budget is 2 s; slack for a loaded CI machine


def test_2d_png_dataset(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "d2", spatial_dims=2, num_train=3, num_test=1)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["file_ending"] == ".png"
    for path in sorted((root / "labelsTr").glob("*.png")):
        label, geometry = read_image(path)
        image = read_image(root / "imagesTr" / path.name.replace(".png", "_0000.png"))[0]
        assert image.dtype == np.uint8 and label.dtype == np.uint8
        assert image.shape == label.shape and label.ndim == 2 and 80 <= image.shape[0] <= 112
        assert set(np.unique(label)) == {0, 1, 2}
        assert image[label == 1].mean() > image[label == 2].mean() > image[(label == 0) & (image > 0)].mean()
        assert geometry.source_format == "png"


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="spatial_dims"):
        make_synthetic_dataset(tmp_path, spatial_dims=4)
    with pytest.raises(ValueError, match="num_train"):
        make_synthetic_dataset(tmp_path, num_train=0)
