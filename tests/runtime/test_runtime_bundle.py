"""model.json: round trip, validation messages that name the key, file errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runtime_helpers import make_bundle_dir

from seg_runtime.atomic import TEMP_PREFIX
from seg_runtime.bundle import SCHEMA_VERSION, Bundle, BundleError, load_bundle, save_bundle_json
from seg_runtime.preprocess import PreprocessSpec


def _bundle(**overrides: object) -> Bundle:
    values: dict[str, object] = {
        "spatial_dims": 3,
        "in_channels": 2,
        "channel_names": ["flair", "t1c"],
        "channel_files": ["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"],
        "num_classes": 3,
        "labels": {"background": 0, "edema": 1, "tumour": 2},
        "regions": {"whole": [1, 2]},
        "patch_size": [32, 32, 16],
        "overlap": 0.5,
        "preprocess": PreprocessSpec(
            target_spacing=[1.0, 1.0, 2.0], normalization=[{"scheme": "zscore", "nonzero": True}]
        ),
        "provenance": {"seg_version": "0.1.0", "config_hash": "abc"},
    }
    values.update(overrides)
    return Bundle(**values)  # type: ignore[arg-type]


def test_round_trip_through_disk(tmp_path: Path) -> None:
    bundle = _bundle(keep_largest=["whole", "tumour"], remove_small={"foreground": 12.5}, tta=True)
    path = save_bundle_json(bundle, tmp_path)
    assert path.name == "model.json"
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION
    assert load_bundle(tmp_path) == bundle
    assert load_bundle(path) == bundle
    assert Bundle.from_dict(bundle.to_dict()) == bundle
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"schema_version": SCHEMA_VERSION + 1}, "schema_version"),
        ({"patch_size": "32"}, "patch_size"),
        ({"patch_size": [32, 32]}, "patch_size"),
        ({"spatial_dims": 4, "patch_size": [1, 1, 1, 1]}, "spatial_dims"),
        ({"labels": {"x": 7}}, "labels"),
        ({"overlap": 1.5}, "overlap"),
        ({"channel_files": ["only-one.nii.gz"]}, "channel_files"),
        ({"preprocess": {"normalization": [{"scheme": "weird"}]}}, r"preprocess.normalization\[0\]"),
        ({"in_channels": True}, "in_channels"),
        ({"keep_largest": ["tumor"]}, "keep_largest"),
        ({"keep_largest": "whole"}, "keep_largest"),
        ({"remove_small": {"tumor": 3}}, "remove_small"),
        ({"remove_small": {"whole": -1}}, "remove_small"),
        ({"remove_small": ["whole"]}, "remove_small"),
        ({"outputs": "probabilities"}, "outputs"),
        ({"tta": "yes"}, "tta"),
        ({"outputs": "regions", "regions": {}}, "outputs"),
    ],
)
def test_invalid_values_name_the_key(change: dict[str, object], key: str) -> None:
    data = _bundle().to_dict()
    data.update(change)
    with pytest.raises(BundleError, match=rf"key '{key}'"):
        Bundle.from_dict(data)


def test_bundles_without_keep_largest_or_outputs_still_load() -> None:
    data = _bundle().to_dict()
    del data["keep_largest"], data["outputs"], data["remove_small"], data["tta"]  # from before the keys existed
    bundle = Bundle.from_dict(data)
    assert (bundle.keep_largest, bundle.remove_small, bundle.outputs, bundle.output_channels) == ([], {}, "classes", 3)
    assert bundle.tta is False
    assert bundle.paint_labels is None


def test_region_bundle_round_trips_with_its_channels() -> None:
    bundle = _bundle(outputs="regions", regions={"whole": [1, 2], "tumour": [2]})
    assert Bundle.from_dict(bundle.to_dict()) == bundle
    assert (bundle.output_channels, bundle.paint_labels) == (2, [1, 2])


@pytest.mark.parametrize("key", ["schema_version", "spatial_dims", "num_classes", "patch_size", "preprocess"])
def test_missing_required_key(key: str) -> None:
    data = _bundle().to_dict()
    del data[key]
    with pytest.raises(BundleError, match=f"missing required key '{key}'"):
        Bundle.from_dict(data)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"nowhere/model.json: not found"):
        load_bundle(tmp_path / "nowhere")
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"model.json: cannot read"):
        load_bundle(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(BundleError, match=r"model.json: missing required key 'in_channels'"):
        load_bundle(tmp_path)


def test_helper_bundle_loads(tmp_path: Path) -> None:
    bundle = load_bundle(make_bundle_dir(tmp_path / "b"))
    assert (bundle.in_channels, bundle.num_classes, bundle.model_file) == (1, 3, "model.onnx")
