"""check_datalist finds every kind of bad case and names it."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from seg.config import DataConfig
from seg.data.check import check_datalist
from seg.data.datalist import DataError, build_datalist

LABELS = {"background": 0, "a": 1, "b": 2}


def _data(root: Path, **kw) -> DataConfig:
    return DataConfig(
        **{"layout": "nnunet", "root": root, "channel_names": ["T1", "T2"], "labels": LABELS, **kw}
    )


def _problems(root: Path, **kw) -> list[str]:
    data = _data(root, **kw)
    with pytest.raises(DataError) as info:
        check_datalist(build_datalist(data), data)
    assert all(p in str(info.value) for p in info.value.problems)
    return info.value.problems


def test_good_dataset_passes(nnunet_root: Path) -> None:
    data = _data(nnunet_root)
    check_datalist(build_datalist(data), data)


def test_every_bad_case_is_listed_with_its_problem(nnunet_root: Path, files) -> None:
    images, labels = nnunet_root / "imagesTr", nnunet_root / "labelsTr"
    image, label = files.volume()
    (images / "case1_0001.nii.gz").unlink()  # missing channel file
    files.nifti(images / "case2_0001.nii.gz", image[:, :, :4])  # channel shape mismatch
    bad_label = label.copy()
    bad_label[0, 0, 0] = 7
    files.nifti(labels / "case10.nii.gz", bad_label)  # value outside the label map
    problems = _problems(nnunet_root)
    assert len(problems) == 3, problems
    assert problems[0].startswith("case case1: image case1_0001.nii.gz is missing")
    assert problems[1].startswith(
        "case case2: case2_0001.nii.gz has shape (8, 7, 4) but case2_0000.nii.gz has (8, 7, 5)"
    )
    assert problems[2] == "case case10: label case10.nii.gz has values {7} not in the label map {0..2}"


def test_affine_mismatch_between_image_and_label(nnunet_root: Path, files) -> None:
    _, label = files.volume()
    files.nifti(nnunet_root / "labelsTr" / "case1.nii.gz", label, affine=np.diag([1.0, 1.0, 1.0, 1.0]))
    (problem,) = _problems(nnunet_root)
    assert problem.startswith("case case1: case1.nii.gz affine differs from case1_0000.nii.gz's")


def test_unreadable_and_unlabelled_files(nnunet_root: Path) -> None:
    (nnunet_root / "imagesTr" / "case2_0000.nii.gz").write_bytes(gzip.compress(b"not a nifti header at all"))
    (nnunet_root / "labelsTr" / "case10.nii.gz").unlink()
    problems = _problems(nnunet_root)
    assert problems[0].startswith("case case2: image case2_0000.nii.gz cannot be read")
    assert problems[1].startswith("case case10: label case10.nii.gz is missing")


def test_channel_count_against_config(nnunet_root: Path) -> None:
    problems = _problems(nnunet_root, channel_names=["T1"])
    assert problems == [
        f"case {c}: has 2 channels but data.channel_names lists 1" for c in ("case1", "case2", "case10")
    ]


def test_channels_inside_one_4d_file_count(tmp_path: Path, files) -> None:
    files.json(
        tmp_path / "dataset.json", {"channel_names": {"0": "x"}, "labels": LABELS, "file_ending": ".nii.gz"}
    )
    files.nifti(tmp_path / "imagesTr" / "c_0000.nii.gz", np.zeros((4, 4, 3, 3), np.float32))
    files.nifti(tmp_path / "labelsTr" / "c.nii.gz", np.zeros((4, 4, 3), np.uint8))
    data = DataConfig(layout="nnunet", root=tmp_path, channel_names=["x"], labels=LABELS)
    with pytest.raises(DataError, match="case c: has 3 channels but data.channel_names lists 1"):
        check_datalist(build_datalist(data), data)


def test_nan_and_inf_in_the_image(nnunet_root: Path, files) -> None:
    image, _ = files.volume()
    image[0, 0, :2] = [np.nan, np.inf]
    files.nifti(nnunet_root / "imagesTr" / "case2_0001.nii.gz", image)
    assert _problems(nnunet_root) == ["case case2: image case2_0001.nii.gz has 2 NaN/Inf voxels"]


def test_non_integer_label(nnunet_root: Path, files) -> None:
    _, label = files.volume()
    files.nifti(nnunet_root / "labelsTr" / "case1.nii.gz", label.astype(np.float32) * 0.5)
    (problem,) = _problems(nnunet_root)
    assert problem.startswith("case case1: label case1.nii.gz holds non-integer values (e.g. [0.5")


def test_label_values_remapping(tmp_path: Path, files) -> None:
    for name, raw in (("0", (0, 255)), ("1", (0, 255)), ("2", (0, 128))):
        files.png(tmp_path / "images" / f"{name}.png", np.full((6, 6), 90))
        mask = np.full((6, 6), raw[0])
        mask[:3] = raw[1]
        files.png(tmp_path / "labels" / f"{name}.png", mask)
    data = DataConfig(
        layout="image_folders",
        root=tmp_path,
        spatial_dims=2,
        channel_names=["em"],
        label_values={0: 0, 255: 1},
    )
    with pytest.raises(DataError) as info:
        check_datalist(build_datalist(data), data)
    assert info.value.problems == ["case 2: label 2.png has values {128} not in data.label_values {0, 255}"]
    assert "1 of 3 cases failed" in str(info.value)
    wrong_target = data.model_copy(update={"label_values": {0: 0, 255: 5}})
    with pytest.raises(DataError, match="maps to 5, which is not a class of data.labels"):
        check_datalist(build_datalist(wrong_target)[:1], wrong_target)


def test_wrong_dimensionality(tmp_path: Path, files) -> None:
    files.png(tmp_path / "images" / "a.png", np.zeros((6, 6)))
    files.png(tmp_path / "labels" / "a.png", np.zeros((6, 6)))
    data = DataConfig(layout="image_folders", root=tmp_path, spatial_dims=3)
    with pytest.raises(DataError, match="case a: image a.png is 2D but data.spatial_dims is 3"):
        check_datalist(build_datalist(data), data)


def test_missing_label_folder_means_no_label(tmp_path: Path, files) -> None:
    files.png(tmp_path / "images" / "a.png", np.zeros((6, 6)))
    data = DataConfig(layout="image_folders", root=tmp_path, spatial_dims=2)
    with pytest.raises(DataError, match="case a: has no label"):
        check_datalist(build_datalist(data), data)


def test_check_record_reopens_only_new_or_changed_cases(nnunet_root: Path, files, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With the disk cache's record, a restart stats the files instead of opening every case; a case
    rewritten since it passed (here with a label value outside the map) is opened and reported."""
    import os

    import seg.data.check as datalist
    from seg.data.case_cache import CheckRecord

    opened: list[str] = []
    real = datalist._case_problems
    monkeypatch.setattr(datalist, "_case_problems", lambda item, *a: opened.append(item["id"]) or real(item, *a))
    data = _data(nnunet_root)
    items = build_datalist(data)
    check_datalist(items, data, CheckRecord(tmp_path / "cache", data))
    assert len(opened) == len(items) and (tmp_path / "cache" / "checked.json").is_file()
    opened.clear()
    check_datalist(items, data, CheckRecord(tmp_path / "cache", data))
    assert opened == []  # nothing changed: nothing opened
    _, label = files.volume()
    label[0, 0, 0] = 7
    path = nnunet_root / "labelsTr" / "case2.nii.gz"
    files.nifti(path, label)
    os.utime(path, ns=(1, 1))  # a new mtime even on a coarse clock
    with pytest.raises(DataError, match=r"case case2: label case2.nii.gz has values \{7\}"):
        check_datalist(items, data, CheckRecord(tmp_path / "cache", data))
    assert opened == ["case2"]
    opened.clear()
    other = data.model_copy(update={"labels": {"background": 0, "a": 1, "b": 2, "c": 3}})
    with pytest.raises(DataError):  # other settings: every case is opened again (case2 is still bad)
        check_datalist(items, other, CheckRecord(tmp_path / "cache", other))
    assert len(opened) == len(items)
    (tmp_path / "cache" / "checked.json").write_text("{torn")  # unreadable record: open everything
    opened.clear()
    with pytest.raises(DataError):
        check_datalist(items, data, CheckRecord(tmp_path / "cache", data))
    assert len(opened) == len(items)
