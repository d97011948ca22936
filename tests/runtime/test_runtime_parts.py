"""Pipeline parts chosen by ``model.json`` (schema 2): defaults for schema-1 bundles, unknown parts refused
in one line naming the key, and the ``logits`` blend that averages in logit space."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import THRESHOLD_BIAS, THRESHOLD_WEIGHT, pointwise_logits, predict, save_nifti

from seg_runtime.bundle import SCHEMA_VERSION, Bundle, BundleError, load_bundle
from seg_runtime.parts import DEFAULT_PIPELINE, Blend, SegPostprocessor, SegPreprocessor
from seg_runtime.preprocess import PreprocessSpec
from seg_runtime.session import OnnxBackend
from seg_runtime.tiling import sliding_window_inference, softmax


def _json(bundle_dir: Path) -> dict:
    return json.loads((bundle_dir / "model.json").read_text())


def _rewrite(bundle_dir: Path, **changes: object) -> None:
    data = {**_json(bundle_dir), **changes}
    (bundle_dir / "model.json").write_text(json.dumps({k: v for k, v in data.items() if v is not None}))


def test_schema_3_is_written_with_the_default_parts(bundle_factory: Callable[..., Path]) -> None:
    data = _json(bundle_factory())
    assert SCHEMA_VERSION == 3 and data["schema_version"] == 3
    assert data["pipeline"] == DEFAULT_PIPELINE == {"preprocess": "seg", "blend": "probabilities", "postprocess": "seg"}
    assert data["mirror_axes"] is None and data["postprocess"] == {}


def test_a_schema_2_bundle_loads_mirroring_every_axis(bundle_factory: Callable[..., Path]) -> None:
    """Schema 2 had neither ``mirror_axes`` nor ``postprocess``: every axis is mirrored, seg's post-processing."""
    old = bundle_factory("old")
    _rewrite(old, schema_version=2, mirror_axes=None, postprocess=None)
    assert "mirror_axes" not in _json(old) and "postprocess" not in _json(old)
    bundle = load_bundle(old)
    assert bundle.tta_axes == tuple(range(bundle.spatial_dims)) and bundle.postprocess == {}
    assert isinstance(bundle.postprocessor(), SegPostprocessor)


def test_a_schema_1_bundle_still_loads_and_runs_with_the_default_parts(
    tmp_path: Path, bundle_factory: Callable[..., Path]
) -> None:
    """A bundle written before parts existed (schema 1, no ``pipeline``) predicts exactly as a schema-2 one."""
    new = bundle_factory("new")
    old = bundle_factory("old")
    _rewrite(old, schema_version=1, pipeline=None, mirror_axes=None, postprocess=None)
    assert "pipeline" not in _json(old)
    bundle = load_bundle(old)
    assert bundle.pipeline == DEFAULT_PIPELINE and isinstance(bundle.preprocessor, SegPreprocessor)
    (tmp_path / "in").mkdir()
    image = np.linspace(0, 3, 9 * 8 * 7, dtype=np.float32).reshape(9, 8, 7)
    save_nifti(tmp_path / "in" / "a.nii.gz", image, np.eye(4))
    for name, folder in (("old", old), ("new", new)):
        assert predict(OnnxBackend(folder, provider="cpu"), tmp_path / "in", tmp_path / name).summary["ok"] == 1
    assert (tmp_path / "old" / "a.nii.gz").read_bytes() == (tmp_path / "new" / "a.nii.gz").read_bytes()


@pytest.mark.parametrize(("pipeline", "needle"), [
    ({"preprocess": "monai"}, "key 'pipeline.preprocess': unknown part 'monai'"),
    ({"blend": "median"}, "key 'pipeline.blend': unknown part 'median'"),
    ({"postprocess": "crf"}, "key 'pipeline.postprocess': unknown part 'crf'"),
    ({"resample": "seg"}, "key 'pipeline': unknown part kind"),
    ({"blend": 3}, "key 'pipeline': expected an object"),
])
def test_unknown_parts_are_refused_naming_the_key(bundle_factory: Callable[..., Path], pipeline: dict,
                                                  needle: str) -> None:
    folder = bundle_factory()
    _rewrite(folder, pipeline=pipeline)
    with pytest.raises(BundleError) as info:
        load_bundle(folder)
    assert needle in str(info.value) and "model.json" in str(info.value)


def test_the_preprocess_settings_belong_to_the_chosen_part() -> None:
    with pytest.raises(BundleError, match="key 'preprocess': settings of part 'seg' expected"):
        Bundle(spatial_dims=3, in_channels=1, channel_names=["x"], channel_files=None, num_classes=2,
               labels={"bg": 0, "fg": 1}, regions={}, patch_size=[8, 8, 8], overlap=0.5,
               preprocess={"orientation": "RAS"})


def test_logit_blend_averages_logits_and_activates_once(tmp_path: Path) -> None:
    """``blend: logits`` blends the raw logits (mirrorings and overlapping patches averaged as logits);
    softmax comes once at the end, so a pointwise model gives back its own logits exactly."""
    rng = np.random.default_rng(0)
    image = rng.normal(1.5, 1.0, (1, 13, 11, 9)).astype(np.float32)

    def model(x: np.ndarray) -> np.ndarray:
        return np.stack([pointwise_logits(patch, THRESHOLD_WEIGHT, THRESHOLD_BIAS) for patch in x])

    logits = sliding_window_inference(image, model, [8, 8, 8], num_classes=3, overlap=0.5,
                                      mirror_axes=(0, 1, 2), activation="none")
    expected = pointwise_logits(image, THRESHOLD_WEIGHT, THRESHOLD_BIAS)
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    blend = Blend("logits", regions=False)
    assert blend.per_patch == "none" and blend.threshold == 0.0
    np.testing.assert_allclose(blend.probabilities(logits), softmax(expected[None], axis=1)[0], atol=1e-5)
    regions = Blend("logits", regions=True)
    assert regions.per_patch == "none" and regions.threshold == 0.0
    assert Blend("probabilities", regions=True).per_patch == "sigmoid"


def test_logit_blend_bundle_predicts_the_same_labels_for_a_pointwise_model(
    tmp_path: Path, bundle_factory: Callable[..., Path]
) -> None:
    """For a pointwise model both blends decode the same labels (argmax of logits == of softmax); the
    probability files differ only in where they were activated."""
    spec = PreprocessSpec(target_spacing=None, normalization=[{"scheme": "none"}])
    probs_dir, logits_dir = bundle_factory("p", preprocess=spec), bundle_factory("l", preprocess=spec)
    _rewrite(logits_dir, pipeline={"blend": "logits"})
    assert load_bundle(logits_dir).blend.name == "logits"
    (tmp_path / "in").mkdir()
    image = np.random.default_rng(1).normal(1.5, 1.0, (12, 10, 9)).astype(np.float32)
    save_nifti(tmp_path / "in" / "a.nii.gz", image, np.diag([1.2, 0.9, 2.0, 1.0]))
    for name, folder in (("p", probs_dir), ("l", logits_dir)):
        manifest = predict(OnnxBackend(folder, provider="cpu"), tmp_path / "in", tmp_path / name, tta=True,
                           save_probabilities=True)
        assert manifest.summary["ok"] == 1
    import nibabel as nib

    labels = [np.asarray(nib.load(str(tmp_path / n / "a.nii.gz")).dataobj) for n in ("p", "l")]
    np.testing.assert_array_equal(labels[0], labels[1])
    probabilities = [nib.load(str(tmp_path / n / "a_probabilities.nii.gz")).get_fdata() for n in ("p", "l")]
    np.testing.assert_allclose(probabilities[0], probabilities[1], atol=1 / 255 + 1e-6)
