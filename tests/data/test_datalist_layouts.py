"""Every dataset layout is discovered into sorted case dicts with the right paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seg.config import DataConfig
from seg.data.datalist import DataError, build_datalist, natural_key


def test_natural_key_sorts_numbers_by_value() -> None:
    assert sorted(["10", "2", "1", "case10", "case2"], key=natural_key) == ["1", "2", "10", "case2", "case10"]


def test_nnunet_layout(nnunet_root: Path) -> None:
    (nnunet_root / "imagesTr" / "README.txt").write_text("not a case")  # ignored with a warning
    items = build_datalist(DataConfig(layout="nnunet", root=nnunet_root))
    assert [c["id"] for c in items] == ["case1", "case2", "case10"]
    first = items[0]
    assert first["image"] == [
        str(nnunet_root / "imagesTr" / "case1_0000.nii.gz"),
        str(nnunet_root / "imagesTr" / "case1_0001.nii.gz"),
    ]
    assert first["label"] == str(nnunet_root / "labelsTr" / "case1.nii.gz")
    test = build_datalist(DataConfig(layout="nnunet", root=nnunet_root), subset="test")
    assert [(c["id"], len(c["image"]), c["label"]) for c in test] == [("case99", 2, None)]


def test_nnunet_lists_a_declared_channel_even_when_its_file_is_missing(nnunet_root: Path) -> None:
    (nnunet_root / "imagesTr" / "case2_0001.nii.gz").unlink()
    items = {c["id"]: c for c in build_datalist(DataConfig(layout="nnunet", root=nnunet_root))}
    assert items["case2"]["image"][1].endswith("case2_0001.nii.gz")  # check_datalist reports it


def test_nnunet_other_file_ending(tmp_path: Path, files) -> None:
    files.json(
        tmp_path / "dataset.json",
        {"channel_names": {"0": "x"}, "labels": {"background": 0}, "file_ending": ".png"},
    )
    files.png(tmp_path / "imagesTr" / "a_0000.png", np.zeros((4, 4)))
    files.png(tmp_path / "labelsTr" / "a.png", np.zeros((4, 4)))
    files.nifti(tmp_path / "imagesTr" / "b_0000.nii.gz", np.zeros((4, 4, 4)))  # wrong ending: ignored
    items = build_datalist(DataConfig(layout="nnunet", root=tmp_path, spatial_dims=2))
    assert [(c["id"], Path(c["label"]).name) for c in items] == [("a", "a.png")]


def test_msd_layout_one_path_per_4d_image(tmp_path: Path, files) -> None:
    for case in ("prostate_16", "prostate_04"):
        files.nifti(tmp_path / "imagesTr" / f"{case}.nii.gz", np.zeros((6, 6, 4, 2), np.float32))
        files.nifti(tmp_path / "labelsTr" / f"{case}.nii.gz", np.zeros((6, 6, 4), np.uint8))
    files.nifti(tmp_path / "imagesTs" / "prostate_99.nii.gz", np.zeros((6, 6, 4, 2), np.float32))
    files.json(
        tmp_path / "dataset.json",
        {
            "modality": {"0": "T2", "1": "ADC"},
            "labels": {"0": "background", "1": "PZ", "2": "TZ"},
            "training": [
                {"image": "./imagesTr/prostate_16.nii.gz", "label": "./labelsTr/prostate_16.nii.gz"},
                {"image": "./imagesTr/prostate_04.nii.gz", "label": "./labelsTr/prostate_04.nii.gz"},
            ],
            "test": ["./imagesTs/prostate_99.nii.gz"],
        },
    )
    data = DataConfig(layout="msd", root=tmp_path, channel_names=["T2", "ADC"])
    items = build_datalist(data)
    assert [c["id"] for c in items] == ["prostate_04", "prostate_16"]
    assert items[0]["image"] == [str(tmp_path / "imagesTr" / "prostate_04.nii.gz")]
    assert items[0]["label"] == str(tmp_path / "labelsTr" / "prostate_04.nii.gz")
    test = build_datalist(data, subset="test")
    assert [(c["id"], c["label"]) for c in test] == [("prostate_99", None)]


def test_case_folders_layout(tmp_path: Path, files) -> None:
    for case in ("pat10", "pat9"):
        image, label = files.volume()
        files.nifti(tmp_path / case / "flair.nii.gz", image)
        files.nifti(tmp_path / case / f"{case}_t1.nii.gz", image)
        files.nifti(tmp_path / case / "seg.nii.gz", label)
    (tmp_path / "docs").mkdir()  # holds none of the files: skipped
    data = DataConfig(
        layout="case_folders",
        root=tmp_path,
        channel_names=["flair", "t1"],
        channel_files=["flair.nii.gz", "{case}_t1.nii.gz"],
        label_file="seg.nii.gz",
    )
    items = build_datalist(data)
    assert [c["id"] for c in items] == ["pat9", "pat10"]
    assert items[0]["image"] == [
        str(tmp_path / "pat9" / "flair.nii.gz"),
        str(tmp_path / "pat9" / "pat9_t1.nii.gz"),
    ]
    assert items[0]["label"] == str(tmp_path / "pat9" / "seg.nii.gz")
    unlabelled = build_datalist(data.model_copy(update={"label_file": None}))
    assert all(c["label"] is None for c in unlabelled)
    with pytest.raises(DataError, match="channel_files"):
        build_datalist(data.model_copy(update={"channel_files": None}))


def test_image_folders_layout(tmp_path: Path, files) -> None:
    for name in ("10", "2", "1"):
        files.png(tmp_path / "img" / f"{name}.png", np.full((8, 8), 100))
        files.png(tmp_path / "mask" / f"{name}.png", np.zeros((8, 8)))
    files.png(tmp_path / "img" / "3.png", np.zeros((8, 8)))  # label absent: expected path, reported later
    (tmp_path / "img" / "notes.txt").write_text("ignored")
    data = DataConfig(
        layout="image_folders", root=tmp_path, spatial_dims=2, image_dir="img", label_dir="mask"
    )
    items = build_datalist(data)
    assert [c["id"] for c in items] == ["1", "2", "3", "10"]
    assert items[0] == {
        "id": "1",
        "image": [str(tmp_path / "img" / "1.png")],
        "label": str(tmp_path / "mask" / "1.png"),
    }
    assert items[2]["label"] == str(tmp_path / "mask" / "3.png") and not Path(items[2]["label"]).exists()
    no_labels = build_datalist(data.model_copy(update={"label_dir": "absent"}))
    assert all(c["label"] is None for c in no_labels)


def test_synthetic_layout_generates_then_reads_as_nnunet(tmp_path: Path) -> None:
    data = DataConfig(layout="synthetic", root=tmp_path / "demo", spatial_dims=2)
    items = build_datalist(data)
    assert len(items) == 8 and items[0]["id"] == "synth_000"
    assert items[0]["image"][0].endswith("imagesTr/synth_000_0000.png")
    test = build_datalist(data, subset="test")
    assert len(test) == 3 and all(Path(c["label"]).is_file() for c in test)


def test_discovery_errors(tmp_path: Path, nnunet_root: Path) -> None:
    with pytest.raises(DataError, match="data.root is not set"):
        build_datalist(DataConfig(layout="nnunet"))
    with pytest.raises(DataError, match="not a folder"):
        build_datalist(DataConfig(layout="nnunet", root=tmp_path / "nowhere"))
    with pytest.raises(DataError, match="dataset.json"):
        build_datalist(DataConfig(layout="nnunet", root=tmp_path / "Dataset001_Tiny" / "imagesTr"))
    with pytest.raises(DataError, match="no separate test set"):
        build_datalist(
            DataConfig(layout="case_folders", root=tmp_path, channel_files=["a.nii.gz"]), subset="test"
        )
    with pytest.raises(DataError, match="no train cases"):
        build_datalist(
            DataConfig(
                layout="case_folders", root=tmp_path / "Dataset001_Tiny" / "labelsTr", channel_files=["x"]
            )
        )
    (nnunet_root / "imagesTr").rename(nnunet_root / "images")
    with pytest.raises(DataError, match="imagesTr"):
        build_datalist(DataConfig(layout="nnunet", root=nnunet_root))
