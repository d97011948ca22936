"""The shared real data sets (../shared/data) are discovered, pass the check and plan sensibly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seg.config import DataConfig, SplitConfig
from seg.data.check import check_datalist
from seg.data.datalist import build_datalist, split_datalist
from seg.data.plan import fingerprint, propose_settings

pytestmark = pytest.mark.data

SHARED_DATA = Path(os.environ.get("SEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
BRATS = SHARED_DATA / "brats2013-deepmedic"
ISBI = SHARED_DATA / "isbi2012-membrane"


def _need(path: Path) -> None:
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")


@pytest.fixture
def brats() -> DataConfig:
    _need(BRATS)
    return DataConfig(
        layout="case_folders",
        root=BRATS,
        channel_names=["flair", "t1c"],
        channel_files=["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"],
        label_file="OTMultiClass.nii.gz",
        labels={"background": 0, "necrosis": 1, "edema": 2, "non_enhancing": 3, "enhancing": 4},
        split=SplitConfig(train=["brats_2013_pat0005_1", "brats_2013_pat0006_1"]),
    )


@pytest.fixture
def isbi() -> DataConfig:
    _need(ISBI)
    return DataConfig(
        layout="image_folders",
        root=ISBI,
        spatial_dims=2,
        channel_names=["em"],
        labels={"membrane": 0, "cell": 1},
        label_values={0: 0, 255: 1},
        split=SplitConfig(val=[str(i) for i in range(15, 20)]),
    )


def test_brats_case_folders(brats: DataConfig) -> None:
    items = build_datalist(brats)
    assert [c["id"] for c in items] == [f"brats_2013_pat000{i}_1" for i in (3, 4, 5, 6)]
    assert all(len(c["image"]) == 2 and c["label"].endswith("OTMultiClass.nii.gz") for c in items)
    check_datalist(items, brats)
    train, val = split_datalist(items, brats.split)
    assert [c["id"] for c in val] == ["brats_2013_pat0003_1", "brats_2013_pat0004_1"] and len(train) == 2


def test_brats_plan(brats: DataConfig) -> None:
    items = build_datalist(brats)[:2]
    plan = propose_settings(fingerprint(items, brats), brats)
    # 1 mm scans of 240x240x155: a CPU patch of 64^3 would see 3% of the head, so the plan coarsens
    # to about 2 mm (the hand-written configs' choice); a GPU budget keeps 1 mm.
    assert plan["stats"]["full_resolution_spacing"] == [1.0, 1.0, 1.0] and plan["stats"]["lowres"]
    assert all(1.9 < s < 2.3 for s in plan["data"]["preprocess"]["target_spacing"])
    assert all(p % 16 == 0 for p in plan["train"]["patch_size"])
    gpu = propose_settings(fingerprint(items, brats), brats, memory_budget="gpu", gpu_memory=40)
    assert gpu["data"]["preprocess"]["target_spacing"] == [1.0, 1.0, 1.0] and not gpu["stats"]["lowres"]


def test_brats_wrong_label_map_names_the_case(brats: DataConfig) -> None:
    items = build_datalist(brats)[:1]
    narrow = brats.model_copy(update={"labels": {"background": 0, "tumour": 1}})
    with pytest.raises(
        ValueError,
        match=r"case brats_2013_pat0003_1: label OTMultiClass.nii.gz has values \{2\.\.4\} not in the label map \{0, 1\}",
    ):
        check_datalist(items, narrow)


def test_isbi_image_folders(isbi: DataConfig) -> None:
    items = build_datalist(isbi)
    assert [c["id"] for c in items] == [str(i) for i in range(20)]
    check_datalist(items, isbi)
    train, val = split_datalist(items, isbi.split)
    assert [c["id"] for c in train] == [str(i) for i in range(15)] and len(val) == 5
    plan = propose_settings(fingerprint(items[:4], isbi), isbi)
    assert plan["train"]["patch_size"] == [256, 256]
    assert plan["data"]["preprocess"]["normalization"] == [{"scheme": "zscore", "nonzero": False}]
