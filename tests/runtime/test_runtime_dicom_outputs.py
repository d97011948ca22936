"""DICOM series as real exports leave them, and what seg-run writes for them: DICOM-SEG with exact
geometry (oblique, gantry-tilted), RTSTRUCT contours that rasterise back to the label map, and the
identity rules (technical attributes filled with a warning, identity never invented)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_builders import (
    FRAME_UID,
    add_localizer,
    add_multiframe,
    dciodvfy_errors,
    tilted_affine,
    write_series,
)
from runtime_helpers import oblique_affine

from seg_runtime.bundle import Bundle
from seg_runtime.cli import main
from seg_runtime.contours import mask_contours, rasterise
from seg_runtime.io import read_image
from seg_runtime.preprocess import PreprocessSpec
from seg_runtime.rtstruct import rtstruct_masks, write_rtstruct

SYNTAXES = {"implicit": "1.2.840.10008.1.2", "big-endian": "1.2.840.10008.1.2.2",
            "deflated": "1.2.840.10008.1.2.1.99", "rle": "1.2.840.10008.1.2.5"}


def _volume(shape: tuple[int, int, int] = (10, 9, 6)) -> np.ndarray:
    """Values spanning the threshold model's three classes, with a hole and two components in class 2."""
    grid = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
    return np.rint(3.0 * (0.6 * grid[0] + 0.4 * grid[2]) * 10) / 10


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


@pytest.mark.parametrize("syntax", sorted(SYNTAXES))
def test_an_anonymised_series_gets_seg_and_rtstruct_with_the_sop_class_from_the_file_meta(
    tmp_path: Path, bundle_factory: Callable[..., Path], caplog: pytest.LogCaptureFixture, syntax: str
) -> None:
    """The real-world KeyError: '' (empty SOPClassUID in the data set, CT Image Storage in the file meta)."""
    hd = pytest.importorskip("highdicom")
    write_series(tmp_path / "in" / "ct", _volume(), oblique_affine(), slope=0.1, anonymised=True,
                 transfer_syntax=SYNTAXES[syntax])
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert main([str(bundle_factory()), "-i", str(tmp_path / "in"), "-o", str(out), "--dicom-seg", "--rtstruct",
                     "--no-progress"]) == 0
    assert "SOPClassUID from the file meta (CT Image Storage) in 6 image(s)" in caplog.text
    labels = np.asarray(nib.load(out / "ct.nii.gz").dataobj)
    segmentation = hd.seg.segread(out / "ct.seg.dcm")
    assert segmentation.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPClassUID == (
        "1.2.840.10008.5.1.4.1.1.2")
    assert segmentation.PatientName == "" and segmentation.FrameOfReferenceUID == FRAME_UID
    masks = rtstruct_masks(out / "ct.rtstruct.dcm", tmp_path / "in" / "ct")
    assert np.array_equal(masks["class2"], labels == 2) and np.array_equal(masks["foreground"], labels > 0)


@pytest.mark.parametrize(("keyword", "value"), [("FrameOfReferenceUID", None), ("StudyInstanceUID", "")])
def test_identity_attributes_are_never_invented(
    tmp_path: Path, bundle_factory: Callable[..., Path], keyword: str, value: str | None
) -> None:
    def edit(ds: object, k: int) -> None:
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)

    write_series(tmp_path / "in" / "ct", _volume(), np.eye(4), edit=edit)
    out = tmp_path / "out"
    assert main([str(bundle_factory()), "-i", str(tmp_path / "in"), "-o", str(out), "--dicom-seg",
                 "--no-progress"]) == 1
    error = (out / "predictions.jsonl").read_text()
    assert f"source DICOM has no {keyword}; it cannot be referenced (not invented)" in error
    assert not (out / "ct.seg.dcm").exists() and not (out / "ct.nii.gz").exists()


def test_a_series_whose_images_disagree_on_the_patient_is_refused(tmp_path: Path) -> None:
    def edit(ds: object, k: int) -> None:
        if k == 3:
            ds.PatientID = "SOMEONE-ELSE"

    folder = tmp_path / "ct"
    write_series(folder, _volume(), np.eye(4), edit=edit)
    with pytest.raises(ValueError, match=r"disagree on PatientID \(P1, SOMEONE-ELSE\); refusing to combine"):
        read_image(folder)


def test_localizers_and_multiframe_objects_never_enter_the_volume(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = write_series(tmp_path / "ct", _volume(), oblique_affine(), slope=0.1)
    expected, geometry = read_image(tmp_path / "ct")
    add_localizer(tmp_path / "ct", files[2])
    add_multiframe(tmp_path / "ct", files[4])
    with caplog.at_level(logging.WARNING):
        volume, again = read_image(tmp_path / "ct")
    assert np.array_equal(volume, expected) and np.allclose(again.affine, geometry.affine)
    assert "LOCALIZER: left out of the volume: a localizer" in caplog.text
    assert "ENHANCED: left out of the volume: a multi-frame object (2 frames" in caplog.text


def test_a_series_over_the_memory_limit_fails_before_its_pixels_are_decoded(tmp_path: Path) -> None:
    write_series(tmp_path / "ct", _volume(), np.eye(4))
    with pytest.raises(ValueError, match=r"the DICOM series of shape \(10, 9, 6\) needs .* over the memory limit"):
        read_image(tmp_path / "ct", max_bytes=1000)


@pytest.mark.parametrize("geometry", ["oblique", "tilted"])
def test_dicom_seg_geometry_is_exact_and_both_objects_are_valid(
    tmp_path: Path, bundle_factory: Callable[..., Path], geometry: str
) -> None:
    hd = pytest.importorskip("highdicom")
    import pydicom

    affine = oblique_affine() if geometry == "oblique" else tilted_affine((0.8, 0.9, 2.0), 20.0)
    files = write_series(tmp_path / "in" / "s", _volume((12, 10, 7)), affine, slope=0.1,
                         modality="CT" if geometry == "oblique" else "MR")
    bundle = bundle_factory(preprocess=PreprocessSpec(target_spacing=[1.0, 1.0, 1.0],
                                                      normalization=[{"scheme": "none"}]))
    out = tmp_path / "out"
    assert main([str(bundle), "-i", str(tmp_path / "in"), "-o", str(out), "--dicom-seg", "--rtstruct",
                 "--no-progress"]) == 0
    labels = np.asarray(nib.load(out / "s.nii.gz").dataobj)
    segmentation = hd.seg.segread(out / "s.seg.dcm")
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    uids = [ds.SOPInstanceUID for ds in sources]  # files are in slice order
    frames = segmentation.get_pixels_by_source_instance(uids, combine_segments=True)
    assert np.array_equal(np.transpose(frames, (2, 1, 0)), labels)
    shared = segmentation.SharedFunctionalGroupsSequence[0]
    assert np.allclose(shared.PlaneOrientationSequence[0].ImageOrientationPatient, sources[0].ImageOrientationPatient)
    assert np.allclose(shared.PixelMeasuresSequence[0].PixelSpacing, sources[0].PixelSpacing)
    by_uid = {ds.SOPInstanceUID: ds for ds in sources}
    for frame in segmentation.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert np.allclose(frame.PlanePositionSequence[0].ImagePositionPatient, by_uid[uid].ImagePositionPatient)
    masks = rtstruct_masks(out / "s.rtstruct.dcm", tmp_path / "in" / "s")
    assert [dice(masks[n], np.isin(labels, m)) for n, m in (("class1", [1]), ("class2", [2]),
                                                            ("foreground", [1, 2]))] == [1.0, 1.0, 1.0]
    assert dciodvfy_errors(out / "s.seg.dcm") == [] and dciodvfy_errors(out / "s.rtstruct.dcm") == []


@pytest.mark.parametrize("seed", range(4))
def test_contours_rasterise_back_to_the_mask_holes_and_components_included(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(50):
        mask = rng.random(tuple(rng.integers(1, 16, 2))) < rng.random()
        contours = mask_contours(mask)
        assert np.array_equal(rasterise(contours, mask.shape), mask)
        for loop in contours:  # no contour touches itself
            assert len({tuple(p) for p in loop}) == len(loop) >= 4


def test_a_ring_and_diagonal_pixels_give_separate_contours() -> None:
    ring = np.zeros((7, 7), bool)
    ring[1:6, 1:6], ring[3, 3] = True, False
    assert sorted(len(c) for c in mask_contours(ring)) == [4, 4]  # outer square, the hole
    diagonal = np.eye(3, dtype=bool)
    assert len(mask_contours(diagonal)) == 3


def _bundle(labels: dict[str, int], regions: dict[str, list[int]], channel: str, model: str) -> Bundle:
    return Bundle(spatial_dims=3, in_channels=1, channel_names=[channel], channel_files=None,
                  num_classes=max(labels.values()) + 1, labels=labels, regions=regions, patch_size=[8, 8, 8],
                  overlap=0.5, preprocess=PreprocessSpec(normalization=[{"scheme": "none"}]),
                  provenance={"model": model})


def _rtstruct_dice(tmp_path: Path, image: np.ndarray, label: np.ndarray, affine: np.ndarray,
                   bundle: Bundle) -> dict[str, float]:
    if np.linalg.det(affine[:3, :3]) < 0:  # DICOM slices need a right-handed frame: flip the slice axis
        flip = np.diag([1.0, 1.0, -1.0, 1.0])
        flip[2, 3] = image.shape[2] - 1
        image, label, affine = image[:, :, ::-1], label[:, :, ::-1], affine @ flip
    write_series(tmp_path / "series", image, affine, modality="MR")
    write_rtstruct(tmp_path / "rt.dcm", label, tmp_path / "series", bundle)
    assert dciodvfy_errors(tmp_path / "rt.dcm") == []
    masks = rtstruct_masks(tmp_path / "rt.dcm", tmp_path / "series")
    members = {name: [index] for name, index in bundle.labels.items() if index} | bundle.regions
    return {name: dice(masks[name], np.isin(label, m)) for name, m in members.items()}


def test_rtstruct_of_a_demo_case_rasterises_back_with_dice_at_least_098(tmp_path: Path) -> None:
    from seg.data.synthetic import LABELS, make_phantom

    phantom = make_phantom(3, np.random.default_rng(3))
    bundle = _bundle(dict(LABELS), {}, "image", "demo")
    image = np.rint(np.clip(phantom.image, 0, None) * 100)
    scores = _rtstruct_dice(tmp_path, image, phantom.label, phantom.affine, bundle)
    assert len(scores) == len(LABELS) - 1 and min(scores.values()) >= 0.98, scores


@pytest.mark.data
def test_rtstruct_of_a_brats_case_rasterises_back_with_dice_at_least_098(tmp_path: Path, shared_data: Path) -> None:
    case = shared_data / "brats2013-deepmedic" / "brats_2013_pat0003_1"
    t1c = nib.load(case / "T1c_subtrMeanDivStd.nii.gz")
    label = np.asarray(nib.load(case / "OTMultiClass.nii.gz").dataobj).astype(np.uint8)
    image = np.rint(np.clip(np.asarray(t1c.dataobj) * 100 + 1000, 0, None))
    bundle = _bundle({"background": 0, "necrosis": 1, "edema": 2, "non-enhancing": 3, "enhancing": 4},
                     {"whole tumour": [1, 2, 3, 4], "tumour core": [1, 3, 4], "enhancing tumour": [4]}, "t1c", "brats")
    scores = _rtstruct_dice(tmp_path, image, label, t1c.affine, bundle)
    assert set(scores) == {"necrosis", "edema", "non-enhancing", "enhancing", "whole tumour", "tumour core",
                           "enhancing tumour"}
    assert min(scores.values()) >= 0.98, scores
