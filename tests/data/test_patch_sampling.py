"""Foreground-centred patches: in proportion to class volume ("voxels") or class first ("classes", nnU-Net)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from seg.config import config_from_dict
from seg.data.patches import RandPatchCropd, foreground_locations
from seg.data.plan_config import plan_config
from tests.raw_datasets import write_nnunet_raw


def _label() -> np.ndarray:
    """A 90-pixel class 1 and a 10-pixel class 2, far apart: a 4x4 patch cannot hold both."""
    label = np.zeros((1, 40, 40), np.int16)
    label[0, 0:9, 0:10] = 1
    label[0, 30:32, 30:35] = 2
    return label


def _rare_share(label: np.ndarray, class_balanced: bool, draws: int = 1000) -> float:
    crop = RandPatchCropd([4, 4], 1.0, class_balanced=class_balanced).set_random_state(0)
    case = {"image": np.zeros((1, 40, 40), np.float32), "label": label, "fg_locations": foreground_locations(label)}
    return float(np.mean([(crop(case)["label"] == 2).any() for _ in range(draws)]))


def test_classes_first_centres_a_rare_class_as_often_as_a_common_one() -> None:
    label = _label()
    assert 0.05 < _rare_share(label, class_balanced=False) < 0.15  # 10 of 100 foreground pixels
    assert 0.43 < _rare_share(label, class_balanced=True) < 0.57  # one of two classes


def test_class_draws_read_the_label_from_a_memory_map_like_from_memory(tmp_path: Path) -> None:
    label = _label()
    np.save(tmp_path / "label.npy", label)
    mapped = np.load(tmp_path / "label.npy", mmap_mode="r")
    locations = foreground_locations(label)
    starts = []
    for source in (label, mapped):
        crop = RandPatchCropd([4, 4], 1.0, class_balanced=True).set_random_state(3)
        case = {"image": np.zeros((1, 40, 40), np.float32), "label": source, "fg_locations": locations}
        starts.append([crop(case)["label"].tolist() for _ in range(50)])
    assert starts[0] == starts[1]


def test_plan_draws_voxels_and_says_why_where_there_are_several_foreground_classes(tmp_path: Path) -> None:
    """Class-first draws did not pay on BraTS (docs/benchmarks/2026-12-05): the plan names the spread."""
    one = write_nnunet_raw(tmp_path / "Dataset001_One", dims=2, cases=4)
    planned = plan_config(one, time_budget=1)
    assert "foreground_sampling" not in planned.config["train"]
    assert config_from_dict(planned.config).train.foreground_sampling == "voxels"

    two = write_nnunet_raw(tmp_path / "Dataset002_Two", dims=2, cases=4)
    meta = json.loads((two / "dataset.json").read_text())
    (two / "dataset.json").write_text(json.dumps({**meta, "labels": {"background": 0, "lesion": 1, "core": 2}}))
    for path in sorted((two / "labelsTr").glob("*.png")):
        label = np.array(Image.open(path))
        ys, xs = np.nonzero(label)
        label[ys[: len(ys) // 8], xs[: len(xs) // 8]] = 2  # a small core inside each lesion
        Image.fromarray(label).save(path)
    planned = plan_config(two, time_budget=1)
    assert "foreground_sampling" not in planned.config["train"]
    why = {name: reason for name, _, reason in planned.rows}["foreground_sampling"]
    assert why.startswith("2 foreground classes, lesion has") and "the voxels of core" in why
    assert "did not pay on BraTS" in why
    # The option stays for a hand edit of the planned config.
    edited = {**planned.config, "train": {**planned.config["train"], "foreground_sampling": "classes"}}
    assert config_from_dict(edited).train.foreground_sampling == "classes"
