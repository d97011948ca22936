"""Case discovery: single files, nnU-Net channel files, case folders, DICOM folders, problems."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from runtime_helpers import oblique_affine, save_dicom_series

from seg_runtime.cases import discover_cases


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")


def test_single_file(tmp_path: Path) -> None:
    _touch(tmp_path, "scan_0000.nii.gz", "pic.png")
    cases, problems = discover_cases(tmp_path / "scan_0000.nii.gz", spatial_dims=3, in_channels=1)
    assert [(c.id, c.kind, c.output_ext) for c in cases] == [("scan", "file", ".nii.gz")] and not problems
    cases, _ = discover_cases(tmp_path / "pic.png", spatial_dims=2, in_channels=1)
    assert [(c.id, c.output_ext) for c in cases] == [("pic", ".png")]


def test_nnunet_channels_grouped_and_missing_reported(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "a_0000.nii.gz",
        "a_0001.nii.gz",
        "b_0001.nii.gz",
        "b_0000.nii.gz",
        "c_0000.nii.gz",
        "notes.txt",
    )
    cases, problems = discover_cases(tmp_path, spatial_dims=3, in_channels=2)
    assert [(c.id, c.kind, [p.name for p in c.paths]) for c in cases] == [
        ("a", "nnunet", ["a_0000.nii.gz", "a_0001.nii.gz"]),
        ("b", "nnunet", ["b_0000.nii.gz", "b_0001.nii.gz"]),
    ]
    assert problems == [("c", "c_0000.nii.gz: missing channel file(s) _0001 (the model takes 2 channel(s))")]


def test_flat_folder_single_channel(tmp_path: Path) -> None:
    # Lone _0000 files are nnU-Net single-channel cases; numbered series are separate cases.
    _touch(tmp_path, "p1_0000.nii.gz", "vol_0001.mha", "vol_0002.mha", "x.nrrd", "y.nhdr", "y.raw", "z.tif")
    cases, problems = discover_cases(tmp_path, spatial_dims=3, in_channels=1)
    assert [c.id for c in cases] == ["p1", "vol_0001", "vol_0002", "x", "y", "z"]
    assert cases[-1].output_ext == ".nii.gz" and not problems


def test_case_folders_dicom_folders_and_problems(tmp_path: Path) -> None:
    files = ["Flair.nii.gz", "T1c.nii.gz"]
    _touch(tmp_path / "case1", *files)
    _touch(tmp_path / "case2", "Flair.nii.gz")
    (tmp_path / "empty").mkdir()
    _touch(tmp_path / "misc", "readme.txt")
    _touch(tmp_path / "series_dcm", "slice1.dcm")
    save_dicom_series(tmp_path / "series_magic", np.zeros((2, 3, 2), np.float32), oblique_affine())
    _touch(tmp_path / ".hidden", "a.dcm")
    cases, problems = discover_cases(tmp_path, spatial_dims=3, in_channels=2, channel_files=files)
    assert [(c.id, c.kind) for c in cases] == [
        ("case1", "folder"),
        ("series_dcm", "dicom"),
        ("series_magic", "dicom"),
    ]
    assert cases[0].paths == [tmp_path / "case1" / f for f in files]
    assert cases[1].paths == [tmp_path / "series_dcm"]
    names = dict(problems)
    assert names["case2"] == "case folder is missing channel file(s): T1c.nii.gz"
    assert "empty folder" in names["empty"] and "holds no DICOM files" in names["misc"]


def test_input_folder_is_itself_a_case(tmp_path: Path) -> None:
    save_dicom_series(tmp_path / "ser", np.zeros((2, 3, 2), np.float32), oblique_affine())
    cases, _ = discover_cases(tmp_path / "ser", spatial_dims=3, in_channels=1)
    assert [(c.id, c.kind) for c in cases] == [("ser", "dicom")]
    _touch(tmp_path / "bra", "Flair.nii.gz")
    cases, _ = discover_cases(tmp_path / "bra", spatial_dims=3, in_channels=1, channel_files=["Flair.nii.gz"])
    assert [(c.id, c.kind) for c in cases] == [("bra", "folder")]


def test_duplicates_and_excluded_output(tmp_path: Path) -> None:
    _touch(tmp_path, "a.nii.gz", "a.nrrd", "b.mha")
    _touch(tmp_path / "pred", "a.nii.gz")
    cases, problems = discover_cases(tmp_path, spatial_dims=3, in_channels=1, exclude=[tmp_path / "pred"])
    assert [c.id for c in cases] == ["a", "b"]
    assert len(problems) == 1 and problems[0][0] == "a.nrrd" and "duplicate case id 'a'" in problems[0][1]
