"""Fingerprint and proposed settings: sane numbers on the synthetic set, nnU-Net rules in isolation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from seg.config import DataConfig, config_from_dict
from seg.data.datalist import build_datalist
from seg.data.plan import (
    LOWRES_COVERAGE,
    fingerprint,
    lowres_spacing,
    normalization_for,
    patch_size,
    plan_dataset,
    plan_to_yaml,
    propose_settings,
    target_spacing,
)
from seg.data.synthetic import LABELS


@pytest.fixture(scope="module")
def synthetic3d(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataConfig, dict, dict]:
    data = DataConfig(
        layout="synthetic", root=tmp_path_factory.mktemp("plan3d"), labels=LABELS, channel_names=["MRI"]
    )
    plan, fp = plan_dataset(data)
    return data, plan, fp


def test_fingerprint_of_the_synthetic_set(synthetic3d: tuple[DataConfig, dict, dict]) -> None:
    _, _, fp = synthetic3d
    assert fp["spatial_dims"] == 3 and fp["channels"] == ["MRI"] and len(fp["cases"]) == 8
    for case in fp["cases"]:
        assert np.allclose(case["spacing"], [1.0, 1.0, 2.0])  # RAS order keeps z last for this tilt
        assert 40 <= case["shape"][0] <= 56 and 26 <= case["shape"][2] <= 38
        assert set(case["label_counts"]) == {"background", "lesion", "organ"}
        assert min(case["label_counts"].values()) > 0
    stats = fp["intensity"][0]
    assert 0 < stats["p00_5"] < stats["mean"] < stats["p99_5"] <= stats["max"]
    assert stats["zero_fraction"] > 0.2 and not stats["integer_valued"]
    assert fp["label_counts"]["background"] > fp["label_counts"]["organ"] > fp["label_counts"]["lesion"]


def test_plan_for_the_synthetic_set(synthetic3d: tuple[DataConfig, dict, dict]) -> None:
    data, plan, _ = synthetic3d
    pre = plan["data"]["preprocess"]
    assert pre["orientation"] == "RAS" and pre["target_spacing"] == [1.0, 1.0, 2.0]
    assert pre["normalization"] == [{"scheme": "zscore", "nonzero": True}]
    patch = plan["train"]["patch_size"]
    assert len(patch) == 3 and all(p % 16 == 0 and p >= 16 for p in patch) and np.prod(patch) <= 64**3
    assert patch == [48, 48, 32]
    assert 2 <= plan["train"]["batch_size"] <= 4
    # The plan pastes into a config: it validates against the schema.
    cfg = config_from_dict(
        {"data": {"layout": "synthetic", "labels": LABELS, **plan["data"]}, "train": plan["train"]}
    )
    assert cfg.train.patch_size == patch and cfg.data.preprocess.normalization[0].nonzero


def test_plan_to_yaml_round_trips(synthetic3d: tuple[DataConfig, dict, dict]) -> None:
    _, plan, fp = synthetic3d
    text = plan_to_yaml(plan, fp)
    assert text.startswith("# Proposed by `seg plan`") and "# 8 cases" in text
    pasted = {k: v for k, v in plan.items() if k != "stats"}  # the statistics go to the comment
    assert yaml.safe_load(text) == pasted
    assert yaml.safe_load(plan_to_yaml(plan)) == pasted


def test_gpu_budget_and_unknown_budget(synthetic3d: tuple[DataConfig, dict, dict]) -> None:
    data, _, fp = synthetic3d
    assert propose_settings(fp, data, memory_budget="gpu")["train"]["patch_size"] == [48, 48, 32]
    with pytest.raises(ValueError, match="memory_budget must be one of"):
        propose_settings(fp, data, memory_budget="tpu")


def test_2d_synthetic_plan_keeps_the_pixel_grid(tmp_path: Path) -> None:
    data = DataConfig(layout="synthetic", root=tmp_path, spatial_dims=2, labels=LABELS)
    plan, fp = plan_dataset(data)
    pre = plan["data"]["preprocess"]
    assert pre["orientation"] is None and pre["target_spacing"] is None
    assert plan["train"]["patch_size"] == [96, 96] and plan["train"]["batch_size"] >= 8
    assert fp["intensity"][0]["integer_valued"]


def test_target_spacing_median_and_anisotropy_rule() -> None:
    iso = np.array([[1.0, 1.0, 1.0], [0.8, 0.8, 1.2], [1.2, 1.2, 1.4]])
    assert np.allclose(target_spacing(iso, np.full((3, 3), 100.0)), [1.0, 1.0, 1.2])
    # Thick slices (5-6 mm, few of them): the low-resolution axis takes the 10th percentile.
    thick = np.array([[0.7, 0.7, 5.0], [0.8, 0.8, 6.0], [0.75, 0.75, 3.0], [0.7, 0.7, 6.0], [0.8, 0.8, 5.0]])
    shapes = np.array([[512, 512, 30]] * 5, dtype=float)
    expected = np.percentile(thick[:, 2], 10)
    assert np.allclose(target_spacing(thick, shapes), [0.75, 0.75, expected])
    assert expected < np.median(thick[:, 2])


def test_lowres_spacing_coarsens_until_the_patch_covers_a_quarter_of_the_image() -> None:
    """nnU-Net's 3d_lowres rule under a CPU budget: BraTS at 1 mm (240x240x155) is coarsened to about
    2 mm, the spacing our hand-written BraTS configs use; small images keep their spacing."""
    spacings, shapes = np.ones((4, 3)), np.array([[240, 240, 155]] * 4, dtype=float)
    target = lowres_spacing(np.ones(3), spacings, shapes, 64**3, 16)
    assert np.allclose(target, target[0]) and 1.9 < target[0] < 2.3  # isotropic stays isotropic
    median = np.array([240, 240, 155]) / target
    assert np.prod(patch_size(median, target, 64**3, 16)) >= LOWRES_COVERAGE * np.prod(median)
    finer = target / 1.03  # one step less would not have covered enough
    median = np.array([240, 240, 155]) / finer
    assert np.prod(patch_size(median, finer, 64**3, 16)) < LOWRES_COVERAGE * np.prod(median)
    # The GPU budget sees enough at full resolution; a small image is never coarsened.
    assert np.allclose(lowres_spacing(np.ones(3), spacings, shapes, 128**3 * 4, 16), 1.0)
    assert np.allclose(lowres_spacing(np.ones(3), spacings, np.full((4, 3), 60.0), 64**3, 16), 1.0)
    # Anisotropic (0.7 x 0.7 x 3 mm, 40 slices): the fine axes grow first, the thick one waits for them.
    aniso = lowres_spacing(np.array([0.7, 0.7, 3.0]), np.tile([0.7, 0.7, 3.0], (4, 1)),
                           np.array([[512, 512, 40]] * 4, dtype=float), 64**3, 16)
    assert 0.7 < aniso[0] == aniso[1] < 3.0 and aniso[2] == 3.0


def test_propose_settings_reports_the_lowres_choice(synthetic3d: tuple[DataConfig, dict, dict]) -> None:
    data, plan, fp = synthetic3d
    assert plan["stats"]["lowres"] is False and plan["stats"]["patch_coverage"] >= LOWRES_COVERAGE
    big = {**fp, "cases": [{**c, "shape": [4 * s for s in c["shape"]]} for c in fp["cases"]]}
    coarse = propose_settings(big, data)
    assert coarse["stats"]["lowres"] and coarse["stats"]["full_resolution_spacing"] == [1.0, 1.0, 2.0]
    spacing = coarse["data"]["preprocess"]["target_spacing"]
    assert spacing[0] == spacing[1] > 1.0 and spacing[2] >= 2.0
    assert "3d_lowres" in plan_to_yaml(coarse) and "stats" not in yaml.safe_load(plan_to_yaml(coarse))


def test_patch_size_divisible_and_within_budget() -> None:
    patch = patch_size(np.array([240.0, 240.0, 155.0]), np.array([1.0, 1.0, 1.0]), 64**3, 16)
    assert all(p % 16 == 0 for p in patch) and np.prod(patch) <= 64**3 and max(patch) - min(patch) <= 16
    assert patch_size(np.array([20.0, 9.0]), np.array([1.0, 1.0]), 256**2, 32) == [32, 32]
    # Coarse z: the physically longest axis shrinks first, so in-plane keeps more voxels.
    aniso = patch_size(np.array([256.0, 256.0, 64.0]), np.array([0.8, 0.8, 4.0]), 64**3, 16)
    assert aniso[0] > aniso[2]


def test_normalization_rules() -> None:
    mri = {
        "integer_valued": False,
        "min": 0.0,
        "zero_fraction": 0.0,
        "mean": 1,
        "std": 1,
        "p00_5": 0,
        "p99_5": 2,
    }
    ct = {
        "integer_valued": True,
        "min": -1024.0,
        "zero_fraction": 0.0,
        "mean": 40.0,
        "std": 120.0,
        "p00_5": -90.0,
        "p99_5": 300.0,
    }
    assert normalization_for("FLAIR", mri) == {"scheme": "zscore", "nonzero": True}
    assert normalization_for("em", mri) == {"scheme": "zscore", "nonzero": False}
    assert normalization_for("em", {**mri, "zero_fraction": 0.5})["nonzero"]
    expected = {"scheme": "fixed", "clip": [-90.0, 300.0], "mean": 40.0, "std": 120.0}
    assert normalization_for("image", ct) == expected  # CT-like by its intensities
    assert normalization_for("CT", {**ct, "integer_valued": False, "min": 0.0}) == expected  # by its name


def test_ct_like_dataset_and_ras_reordering(tmp_path: Path, files) -> None:
    files.json(
        tmp_path / "dataset.json",
        {"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1}, "file_ending": ".nii.gz"},
    )
    rng = np.random.default_rng(0)
    # Voxel axes (x, y, z) stored as (z, y, x): spacing (3, 1, 1) must read as (1, 1, 3) in RAS order.
    affine = np.array(
        [[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    )
    for i in range(3):
        image = np.full((10, 20, 24), -1024, dtype=np.int16)
        image[3:7, 5:15, 5:19] = rng.integers(20, 80, size=(4, 10, 14))
        label = (image > -1024).astype(np.uint8)
        files.nifti(tmp_path / "imagesTr" / f"ct{i}_0000.nii.gz", image, affine)
        files.nifti(tmp_path / "labelsTr" / f"ct{i}.nii.gz", label, affine)
    data = DataConfig(layout="nnunet", root=tmp_path, channel_names=["ct"])
    fp = fingerprint(build_datalist(data), data)
    assert fp["channels"] == ["CT"]
    assert fp["cases"][0]["spacing"] == [1.0, 1.0, 3.0] and fp["cases"][0]["shape"] == [24, 20, 10]
    norm = propose_settings(fp, data)["data"]["preprocess"]["normalization"][0]
    assert norm["scheme"] == "fixed" and 20 <= norm["clip"][0] < norm["mean"] < norm["clip"][1] <= 80
