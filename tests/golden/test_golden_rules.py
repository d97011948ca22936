"""The comparison rules of the golden tests: what counts as a change and what as float noise."""

from __future__ import annotations

import pytest

from .golden import Normaliser, compare, numbers, skeleton, update_requested
from .snapshot import label_summary

TABLE = ["metric       fold_0   pooled", "-----------  -------  -------", "dice_lesion  0.3547   0.4577"]


def test_normaliser_masks_paths_clocks_run_ids_hashes_and_durations() -> None:
    norm = Normaliser({"/tmp/pytest-of-x/pytest-7/golden0": "<TMP>"})
    assert norm.text("/tmp/pytest-of-x/pytest-7/golden0/pred/a.nii.gz") == "<TMP>/pred/a.nii.gz"
    first = "2026-12-06T21:10:55.911591+00:00-5251-a23f00"
    second = "2026-12-06T21:10:56.000000+00:00-5251-b0b0b0"
    assert norm.text(first) == "<RUN1>"
    assert norm.text(f"{second} {first}") == "<RUN2> <RUN1>"
    assert norm.text("hash b8bfa161b71c, time: train 0.7s") == "hash <HASH>, time: train <SEC>"
    assert norm.text("113.22999856052925") == "113.22999856052925"  # digits after a point are no hash
    assert norm.value({"seconds": 1.2, "versions": {"torch": "2.5"}, "x": float("nan"), "time": None}) == {
        "seconds": "<MASKED>", "versions": {"torch": "<MASKED>"}, "x": "nan", "time": None}


def test_numbers_inside_names_belong_to_the_skeleton() -> None:
    text = "synth_008 hd95_lesion fold_0 p0.5-p99.5 [4, 8, 16] -0.012 1.5e+05"
    assert skeleton(text) == "synth_008 hd95_lesion fold_0 p0.5-p99.5 [#, #, #] -# #"
    assert numbers(text) == [4, 8, 16, 0.012, 150000.0]


def test_printed_scores_tolerate_noise_but_not_a_changed_table() -> None:
    wider = ["metric            fold_0   pooled", "----------------  -------  -------",
             "dice_lesion       0.3600   0.4577"]
    assert compare({"stdout (scores)": TABLE}, {"stdout (scores)": wider}) == []
    changed = [*TABLE[:2], "dice_lesion  0.4000   0.4577"]
    assert compare({"stdout (scores)": TABLE}, {"stdout (scores)": changed})
    assert compare({"stdout": TABLE}, {"stdout": wider})  # not a score: 0.3547 must stay 0.3547
    renamed = [*TABLE[:2], "dice_organ  0.3547   0.4577"]
    assert compare({"stdout (scores)": TABLE}, {"stdout (scores)": renamed})
    assert compare({"stdout (scores)": TABLE}, {"stdout (scores)": TABLE[:2]})


def test_surface_scores_get_their_own_tolerance_by_key_row_or_column() -> None:
    table = ["case       dice_lesion  hd95_lesion  nsd_lesion",
             "---------  -----------  -----------  ----------",
             "synth_008  0.6740       7.2249       0.3976"]
    moved = [*table[:2], "synth_008  0.6740       7.0711       0.3774"]  # HD95 -2 %, NSD -0.02
    assert compare({"stdout (scores)": table}, {"stdout (scores)": moved}) == []
    dice_moved = [*table[:2], "synth_008  0.7240       7.2249       0.3976"]
    assert compare({"stdout (scores)": table}, {"stdout (scores)": dice_moved})
    rows = ["metric       fold_0", "-----------  -------", "hd95_lesion  12.7223", "dice_lesion  0.1337"]
    hd95_moved = [*rows[:2], "hd95_lesion  13.5", rows[3]]
    assert compare({"stdout (scores)": rows}, {"stdout (scores)": hd95_moved}) == []
    assert compare({"stdout (scores)": rows}, {"stdout (scores)": [*rows[:3], "dice_lesion  0.2"]})
    assert compare({"hd95_organ": 7.2249}, {"hd95_organ": 7.0711}) == []
    assert compare({"nsd_organ": 0.4}, {"nsd_organ": 0.5})


@pytest.mark.parametrize(("golden", "actual", "same"), [
    ({"lr": 0.01}, {"lr": 0.02}, False),
    ({"train_loss": 1.0}, {"train_loss": 1.015}, True),
    ({"dice_organ": 0.5}, {"dice_organ": 0.53}, False),
    ({"hd95_organ": 20.0}, {"hd95_organ": 20.9}, True),
    ({"hd95_organ": 20.0}, {"hd95_organ": 23.0}, False),
    ({"cases": 4}, {"cases": 4.0}, False),
    ({"parity": 9.5e-06}, {"parity": 0}, True),
    ({"dice_cases": 4}, {"dice_cases": 5}, False),
    ({"cases": 4}, {"cases": 5}, False),
    ({"a": 1}, {"a": 1, "b": 2}, False),
    ({"tta": True}, {"tta": False}, False),
    ({"chosen": None}, {"chosen": "keep_largest"}, False),
    ({"files": ["a.nii.gz", "b.nii.gz"]}, {"files": ["a.nii.gz"]}, False),
])
def test_structured_values(golden: dict, actual: dict, same: bool) -> None:
    assert (compare(golden, actual) == []) is same


def test_label_maps_by_shape_dtype_and_histogram() -> None:
    import numpy as np

    labels = np.zeros((10, 10, 10), np.uint8)
    labels[:5] = 2
    golden = label_summary(labels)
    noisy = labels.copy()
    noisy[0, 0, :5] = 1  # 5 voxels of 1000: within 0.5 %
    assert compare(golden, label_summary(noisy)) == []
    flipped = np.where(labels == 2, 1, labels).astype(np.uint8)
    assert compare(golden, label_summary(flipped))
    assert compare(golden, label_summary(labels.astype(np.uint16)))
    assert compare(golden, label_summary(labels[:, :, :9]))


def test_update_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEG_UPDATE_GOLDEN", "seg-run-summary,seg-predict-summary")
    assert update_requested("seg-run-summary") and not update_requested("seg-run")
    monkeypatch.setenv("SEG_UPDATE_GOLDEN", "1")
    assert update_requested("seg-run")
    monkeypatch.delenv("SEG_UPDATE_GOLDEN")
    assert not update_requested("seg-run")
