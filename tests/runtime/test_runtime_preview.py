"""Preview PNGs: slice choice, orientation, colours where the labels are, the words on them (slice
index, patient directions, a legend of class names) and the --preview plumbing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from runtime_helpers import save_nifti

from seg_runtime.atomic import TEMP_PREFIX
from seg_runtime.bundle import load_bundle
from seg_runtime.cli import main
from seg_runtime.geometry import make_geometry
from seg_runtime.labelmaps import read_label_map
from seg_runtime.preprocess import PreprocessSpec
from seg_runtime.preview import (
    axial_slices,
    display_edges,
    label_colour,
    preview_layout,
    preview_panels,
    render_preview,
    write_preview,
)


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
    path = write_preview(tmp_path / "p" / "case.png", image, labels, names={1: "cell", 2: "membrane"})
    picture = _read_png(path)
    layout = preview_layout(image, labels, names={1: "cell", 2: "membrane"})
    (x, y, panel), = layout.panels
    factor = panel.shape[0] // 48
    assert panel.shape == (48 * factor, 64 * factor, 3) and factor >= 2 and (x, y) == (0, 0)
    expected = np.kron(labels > 0, np.ones((factor, factor), bool))
    np.testing.assert_array_equal(_coloured(panel), expected)
    # The PNG is the panel (a 2D image has no title and no directions) with the legend under it.
    np.testing.assert_array_equal(picture[: panel.shape[0]], panel)
    assert picture.shape[0] > panel.shape[0] and [t.text for t in layout.texts] == ["1 cell", "2 membrane"]
    # Each class has its own colour, and the legend's swatch shows it.
    assert not np.array_equal(panel[15 * factor, 10 * factor], panel[35 * factor, 50 * factor])
    for swatch in layout.swatches:
        x0, y0, x1, y1 = swatch.box
        assert tuple(picture[(y0 + y1) // 2, (x0 + x1) // 2]) == swatch.colour
    assert [s.colour for s in layout.swatches] == [label_colour(1), label_colour(2)]
    assert not any(p.name.startswith(TEMP_PREFIX) for p in path.parent.iterdir())


def test_3d_preview_is_radiological_and_follows_the_labels() -> None:
    image = np.random.default_rng(0).normal(size=(20, 16, 30)).astype(np.float32)
    labels = np.zeros((20, 16, 30), np.uint8)
    labels[:5, :4, 8:20] = 1  # RAS voxel axes: the patient's left (low x), posterior (low y)
    geometry = make_geometry(np.diag([1.0, 1.0, 2.5, 1.0]), labels.shape, "nifti")
    first = preview_panels(image, labels, geometry)[0].pixels
    coloured = _coloured(first)
    assert coloured.any()
    rows, cols = np.nonzero(coloured)
    # Radiological display: posterior at the bottom, the patient's left on the right.
    assert rows.min() >= first.shape[0] * 0.7 and cols.min() >= first.shape[1] * 0.7
    picture = render_preview(image, labels, geometry, names={1: "lesion"})
    # The same volume stored LPS shows the same picture, words included.
    flipped = make_geometry(np.diag([-1.0, -1.0, 2.5, 1.0]), labels.shape, "nifti")
    lps = render_preview(image[::-1, ::-1], labels[::-1, ::-1], flipped, names={1: "lesion"})
    np.testing.assert_array_equal(lps, picture)


def test_3d_preview_names_the_slices_the_directions_and_the_classes() -> None:
    """Issue 29: slice index as stored, patient directions from the affine, a legend of class names."""
    image = np.random.default_rng(1).normal(size=(20, 16, 30)).astype(np.float32)
    labels = np.zeros((20, 16, 30), np.uint8)
    labels[:5, :4, 8:20] = 1
    labels[10:14, 8:12, 12:16] = 3  # a value the model does not name
    names = {1: "lesion", 2: "organ"}
    ras = make_geometry(np.diag([1.0, 1.0, 2.5, 1.0]), labels.shape, "nifti")
    layout = preview_layout(image, labels, ras, names=names)
    texts = {(t.role, t.text) for t in layout.texts}
    titles = [t.text for t in layout.texts if t.role == "title"]
    assert titles == [f"axial z={k}/30" for k in axial_slices(labels)]
    assert {("edge left", "R"), ("edge right", "L"), ("edge top", "A"), ("edge bottom", "P")} <= texts
    assert [t.text for t in layout.texts if t.role == "legend"] == ["1 lesion", "3 label 3"]  # organ is absent
    # Stored flipped in z (LPI): the same slices are shown, titled with their stored index.
    lpi = make_geometry(np.diag([-1.0, -1.0, -2.5, 1.0]), labels.shape, "nifti")
    flipped = preview_layout(image[::-1, ::-1, ::-1], labels[::-1, ::-1, ::-1], lpi, names=names)
    assert [t.text for t in flipped.texts if t.role == "title"] == [f"axial z={29 - k}/30" for k in axial_slices(labels)]
    assert [t.text for t in flipped.texts if t.role.startswith("edge")] == [
        t.text for t in layout.texts if t.role.startswith("edge")]
    # Stored sagittal (the superior axis first): the title names that axis.
    sagittal = make_geometry(np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]]), (30, 16, 20), "nifti")
    moved = preview_layout(np.moveaxis(image, 2, 0), np.moveaxis(labels, 2, 0), sagittal, names=names)
    assert [t.text for t in moved.texts if t.role == "title"] == [f"axial x={k}/30" for k in axial_slices(labels)]
    # The words are within the picture and every panel is in it.
    assert all(0 <= t.x < layout.width and 0 <= t.y < layout.height for t in layout.texts)
    assert all(x + p.shape[1] <= layout.width and y + p.shape[0] <= layout.height for x, y, p in layout.panels)


def test_edge_letters_follow_the_affine() -> None:
    """The letters are read from the affine of the shown view: a view flipped in x and y swaps them."""
    assert display_edges(np.eye(4)) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert display_edges(np.diag([-1.0, -1.0, 1.0, 1.0])) == {"left": "L", "right": "R", "top": "P", "bottom": "A"}
    # voxel x runs posterior and voxel y to the right; the display runs both backwards
    rotated = np.array([[0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    assert display_edges(rotated) == {"left": "P", "right": "A", "top": "R", "bottom": "L"}


def test_seg_run_preview_next_to_outputs(tmp_path: Path, bundle_factory: Callable[..., Path]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    volume = np.zeros((12, 10, 9), np.float32)
    volume[3:8, 2:6, 2:7] = 1.5  # class 1 of the threshold model
    save_nifti(src / "ct.nii.gz", volume, np.diag([0.8, 0.8, 2.0, 1.0]))
    out = tmp_path / "out"
    bundle = bundle_factory()
    assert main([str(bundle), "-i", str(src), "-o", str(out), "--preview", "--no-progress"]) == 0
    picture = _read_png(out / "preview" / "ct.png")
    assert _coloured(picture).any() and (out / "ct.nii.gz").is_file()
    # The legend names the bundle's classes: the picture is the one drawn with its label names.
    labels, geometry = read_label_map(out / "ct.nii.gz")
    names = {index: name for name, index in load_bundle(bundle).labels.items()}
    expected = render_preview(volume.astype(np.float16), labels, geometry, names=names)
    np.testing.assert_array_equal(picture, expected)
    assert not np.array_equal(render_preview(volume.astype(np.float16), labels, geometry), expected)
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
