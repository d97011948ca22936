"""Issue 29: label maps are written in the dataset's own values (``model.json`` ``label_values``; ISBI's
interior is 255 and its membrane 0), class indices on request (``--class-indices``); uint16 (16-bit PNG)
above 255; every output's record names its encoding, so a rerun never keeps a map of the other one, and
extras made later from a map on disk read it back as classes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from runtime_helpers import save_nifti, threshold_labels

from seg_runtime.bundle import BundleError, load_bundle
from seg_runtime.cli import main as seg_run
from seg_runtime.io import read_image
from seg_runtime.records import latest_states

VALUES = {"class0": 255, "class1": 0, "class2": 7}  # a background that is not 0, a class that is


def _scan(tmp_path: Path) -> tuple[Path, np.ndarray]:
    folder = tmp_path / "in"
    folder.mkdir()
    image = np.zeros((12, 10, 8), np.float32)
    image[2:9, 3:8, 2:6] = 1.5  # class 1
    image[4:6, 4:6, 3:5] = 2.5  # class 2
    save_nifti(folder / "c0.nii.gz", image, np.eye(4))
    return folder, threshold_labels(image[None])


def _run(bundle: Path, src: Path, out: Path, *extra: str) -> np.ndarray:
    assert seg_run(["predict", str(bundle), "-i", str(src), "-o", str(out), "--provider", "cpu", "--no-progress",
                    *extra]) == 0
    return np.asarray(read_image(out / "c0.nii.gz")[0])


def _encoding(out: Path) -> str:
    return latest_states(out)["c0"].record["settings"]["label_encoding"]


def test_label_maps_are_written_in_the_datasets_values_and_as_indices_on_request(
    tmp_path: Path, bundle_factory: Callable[..., Path]
) -> None:
    src, classes = _scan(tmp_path)
    bundle = bundle_factory(label_values=VALUES)
    values = _run(bundle, src, tmp_path / "values")
    lut = np.array([VALUES[f"class{i}"] for i in range(3)])
    assert set(np.unique(classes)) == {0, 1, 2} and np.array_equal(values, lut[classes])
    assert values.dtype == np.uint8 and _encoding(tmp_path / "values") == "dataset_values"
    indices = _run(bundle, src, tmp_path / "indices", "--class-indices")
    assert np.array_equal(indices, classes) and _encoding(tmp_path / "indices") == "class_indices"
    # A bundle without label_values writes class indices, recorded as such (as before).
    plain = _run(bundle_factory("plain"), src, tmp_path / "plain")
    assert np.array_equal(plain, classes) and _encoding(tmp_path / "plain") == "class_indices"


def test_values_over_255_are_written_as_uint16_in_nifti_and_png(
    tmp_path: Path, bundle_factory: Callable[..., Path]
) -> None:
    src, classes = _scan(tmp_path)
    wide = {"class0": 1000, "class1": 0, "class2": 65535}
    values = _run(bundle_factory("wide", label_values=wide), src, tmp_path / "out")
    assert values.dtype == np.uint16 and set(np.unique(values)) == {0, 1000, 65535}
    png_in = tmp_path / "png_in"
    png_in.mkdir()
    Image.fromarray(np.array([[0, 150, 250], [0, 150, 250]], np.uint8)).save(png_in / "p.png")
    bundle2d = bundle_factory("wide2d", spatial_dims=2, label_values=wide)
    meta = json.loads((bundle2d / "model.json").read_text())
    meta["preprocess"]["normalization"] = [{"scheme": "fixed", "mean": 0.0, "std": 100.0}]
    (bundle2d / "model.json").write_text(json.dumps(meta))
    assert seg_run(["predict", str(bundle2d), "-i", str(png_in), "-o", str(tmp_path / "png_out"), "--provider",
                    "cpu", "--no-progress"]) == 0
    with Image.open(tmp_path / "png_out" / "p.png") as png:
        assert png.mode == "I;16" and np.array(png).tolist() == [[1000, 0, 65535]] * 2


def test_a_rerun_never_keeps_a_map_of_the_other_encoding_and_extras_read_the_map_as_classes(
    tmp_path: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src, classes = _scan(tmp_path)
    bundle, out = bundle_factory(label_values=VALUES), tmp_path / "out"
    _run(bundle, src, out)
    capsys.readouterr()
    indices = _run(bundle, src, out, "--class-indices")
    assert "1 ok" in capsys.readouterr().out  # predicted again, not skipped
    assert np.array_equal(indices, classes) and _encoding(out) == "class_indices"
    _run(bundle, src, out)  # and back: the dataset's values again
    assert _encoding(out) == "dataset_values"
    # --statistics added later from the map on disk (no prediction) counts classes, not file values.
    capsys.readouterr()
    _run(bundle, src, out, "--statistics")
    assert "added to 1 skipped case(s)" in capsys.readouterr().out
    stats = json.loads((out / "statistics" / "c0.json").read_text())
    text = json.dumps(stats)
    for name in ("class1", "class2"):
        assert name in text
    fresh = tmp_path / "fresh"
    _run(bundle, src, fresh, "--statistics")
    assert json.loads((fresh / "statistics" / "c0.json").read_text())["structures"] == stats["structures"]


@pytest.mark.parametrize(("values", "problem"), [
    ({"class0": 255, "class1": 0}, "one value per class"),
    ({"class0": 1, "class1": 1, "class2": 2}, "distinct"),
    ({"class0": 70000, "class1": 0, "class2": 1}, "0..65535"),
])
def test_a_bundle_with_bad_label_values_is_refused_in_one_line(
    tmp_path: Path, bundle_factory: Callable[..., Path], values: dict[str, int], problem: str
) -> None:
    bundle = bundle_factory()
    meta = json.loads((bundle / "model.json").read_text())
    meta["label_values"] = values
    (bundle / "model.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=f"label_values.*{problem}"):
        load_bundle(bundle)
