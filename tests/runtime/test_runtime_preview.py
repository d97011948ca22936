"""Preview PNGs: slice choice, orientation, colours where the labels are, and the --preview plumbing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from runtime_helpers import save_nifti

from seg_runtime.atomic import TEMP_PREFIX
from seg_runtime.cli import main
from seg_runtime.geometry import make_geometry
from seg_runtime.preprocess import PreprocessSpec
from seg_runtime.preview import axial_slices, render_preview, write_preview


def _coloured(picture: np.ndarray) -> np.ndarray:
    """Pixels whose channels differ: labels are drawn in colour, everything else is grey."""
    rgb = picture.astype(np.int16)
    return (rgb[..., 0] != rgb[..., 1]) | (rgb[..., 1] != rgb[..., 2])


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        image.verify()
    with Image.open(path) as image:
        return np.asarray(image)


def test_axial_slices_stay_inside_the_foreground() -> None:
    labels = np.zeros((6, 6, 40), np.uint8)
    labels[2:4, 2:4, 10:21] = 1
    picked = axial_slices(labels)
    assert len(picked) == 3 and all(10 < k < 20 for k in picked)
    assert axial_slices(np.zeros((4, 4, 9), np.uint8)) == [2, 4, 6]  # nothing found: spread over all
    one = np.zeros((4, 4, 9), np.uint8)
    one[1, 1, 5] = 2
    assert axial_slices(one) == [5]


def test_2d_preview_colours_exactly_the_labelled_pixels(tmp_path: Path) -> None:
    image = np.tile(np.linspace(0, 255, 64, dtype=np.float32), (48, 1))
    labels = np.zeros((48, 64), np.uint8)
    labels[10:20, 5:30] = 1
    labels[30:40, 40:60] = 2
    path = write_preview(tmp_path / "p" / "case.png", image, labels)
    picture = _read_png(path)
    factor = picture.shape[0] // 48
    assert picture.shape == (48 * factor, 64 * factor, 3) and factor >= 2
    expected = np.kron(labels > 0, np.ones((factor, factor), bool))
    np.testing.assert_array_equal(_coloured(picture), expected)
    # Each class has its own colour.
    assert not np.array_equal(picture[15 * factor, 10 * factor], picture[35 * factor, 50 * factor])
    assert not any(p.name.startswith(TEMP_PREFIX) for p in path.parent.iterdir())


def test_3d_preview_is_radiological_and_follows_the_labels() -> None:
    image = np.random.default_rng(0).normal(size=(20, 16, 30)).astype(np.float32)
    labels = np.zeros((20, 16, 30), np.uint8)
    labels[:5, :4, 8:20] = 1  # RAS voxel axes: the patient's left (low x), posterior (low y)
    geometry = make_geometry(np.diag([1.0, 1.0, 2.5, 1.0]), labels.shape, "nifti")
    picture = render_preview(image, labels, geometry)
    coloured = _coloured(picture)
    assert coloured.any()
    panel_height = picture.shape[0]
    first = coloured[:, : picture.shape[1] // 3 - 2]
    rows, cols = np.nonzero(first)
    # Radiological display: posterior at the bottom, the patient's left on the right.
    assert rows.min() >= panel_height * 0.7 and cols.min() >= first.shape[1] * 0.7
    # The same volume stored LPS shows the same picture.
    flipped = make_geometry(np.diag([-1.0, -1.0, 2.5, 1.0]), labels.shape, "nifti")
    lps = render_preview(image[::-1, ::-1], labels[::-1, ::-1], flipped)
    np.testing.assert_array_equal(lps, picture)


def test_seg_run_preview_next_to_outputs(tmp_path: Path, bundle_factory: Callable[..., Path]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    volume = np.zeros((12, 10, 9), np.float32)
    volume[3:8, 2:6, 2:7] = 1.5  # class 1 of the threshold model
    save_nifti(src / "ct.nii.gz", volume, np.diag([0.8, 0.8, 2.0, 1.0]))
    out = tmp_path / "out"
    assert main([str(bundle_factory()), "-i", str(src), "-o", str(out), "--preview", "--no-progress"]) == 0
    picture = _read_png(out / "preview" / "ct.png")
    assert _coloured(picture).any() and (out / "ct.nii.gz").is_file()
    assert not any(p.name.startswith(TEMP_PREFIX) for p in out.rglob("*"))


def test_preview_failure_does_not_fail_the_case(
    tmp_path: Path,
    bundle_factory: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import seg_runtime.stages as batch

    def broken(*args: object, **kwargs: object) -> Path:
        raise RuntimeError("disk full")

    monkeypatch.setattr(batch, "write_preview", broken)
    src = tmp_path / "in"
    src.mkdir()
    save_nifti(src / "a.nii.gz", np.full((8, 8, 8), 1.5, np.float32), np.eye(4))
    bundle = bundle_factory(preprocess=PreprocessSpec(normalization=[{"scheme": "none"}]))
    with caplog.at_level(logging.WARNING, logger="seg_runtime.stages"):
        assert main([str(bundle), "-i", str(src), "-o", str(tmp_path / "out"), "--preview"]) == 0
    assert "no preview (RuntimeError: disk full)" in caplog.text
    assert (tmp_path / "out" / "a.nii.gz").is_file()
