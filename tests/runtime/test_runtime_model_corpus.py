"""Issue 26: 20+ malformed bundles and checkpoints, each refused before any case in one line naming the
file and the problem, exit 2, nothing written (seg-run for bundles, seg predict for checkpoints)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import THRESHOLD_BIAS, THRESHOLD_WEIGHT, build_pointwise_onnx, save_nifti

from seg_runtime.cli import main as seg_run


def _edit(bundle: Path, **changes: object) -> None:
    data = json.loads((bundle / "model.json").read_text())
    (bundle / "model.json").write_text(json.dumps({**data, **changes}))


def _nan_model(bundle: Path) -> None:
    bias = THRESHOLD_BIAS.copy()
    bias[0] = np.inf
    build_pointwise_onnx(bundle / "model.onnx", THRESHOLD_WEIGHT, bias, 3)
    _edit(bundle, files={})


BUNDLES: dict[str, tuple[Callable[[Path], None], str]] = {
    "no_model_json": (lambda b: (b / "model.json").unlink(), "model.json: not found"),
    "model_json_not_json": (lambda b: (b / "model.json").write_text("{not json"), "cannot read"),
    "model_json_a_list": (lambda b: (b / "model.json").write_text("[1, 2]"), "expected a JSON object"),
    "schema_too_new": (lambda b: _edit(b, schema_version=99), "key 'schema_version'"),
    "missing_key": (lambda b: (b / "model.json").write_text(json.dumps(
        {k: v for k, v in json.loads((b / "model.json").read_text()).items() if k != "in_channels"})),
        "missing required key 'in_channels'"),
    "wrong_type": (lambda b: _edit(b, patch_size="8"), "key 'patch_size'"),
    "no_model_file": (lambda b: (b / "model.onnx").unlink(), "model file named in model.json not found"),
    "model_file_outside": (lambda b: _edit(b, model_file="../model.onnx"), "key 'model_file'"),
    "model_garbage": (lambda b: ((b / "model.onnx").write_bytes(b"garbage"), _edit(b, files={})),
                      "onnxruntime cannot load the model"),
    "model_swapped": (lambda b: build_pointwise_onnx(b / "model.onnx", THRESHOLD_WEIGHT * 2, THRESHOLD_BIAS, 3),
                      "has another SHA-256"),
    "graph_channels": (lambda b: _edit(b, in_channels=3, channel_names=["a", "b", "c"]), "key 'in_channels'"),
    "graph_classes": (lambda b: _edit(b, num_classes=5, labels={f"c{i}": i for i in range(5)}, regions={}),
                      "key 'num_classes'"),
    "non_finite_weights": (_nan_model, "NaN or Inf weights"),
    "patch_too_large": (lambda b: _edit(b, patch_size=[5000, 5000, 5000]), "key 'patch_size'"),
    "unknown_part": (lambda b: _edit(b, pipeline={"preprocess": "magic"}), "key 'pipeline.preprocess'"),
    "label_out_of_range": (lambda b: _edit(b, labels={"background": 0, "x": 9}), "key 'labels'"),
    "regions_not_paintable": (lambda b: _edit(b, outputs="regions", regions={"a": [0]}), "key 'outputs'"),
    "truncated_model": (lambda b: ((b / "model.onnx").write_bytes((b / "model.onnx").read_bytes()[:40]),
                                   _edit(b, files={})), "model.onnx"),
    "empty_folder": (lambda b: [p.unlink() for p in b.iterdir()], "not found"),
    "bad_normalisation": (lambda b: _edit(b, preprocess={"normalization": [{"scheme": "zscore"}, {"scheme": "none"},
                                                                          {"scheme": "none"}]}),
                          "key 'preprocess.normalization'"),
}


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_a_malformed_bundle_is_refused_in_one_line(tmp_path: Path, bundle_factory: Callable[..., Path],
                                                   capsys: pytest.CaptureFixture[str], name: str) -> None:
    bundle = bundle_factory(name)
    spoil, phrase = BUNDLES[name]
    spoil(bundle)
    (tmp_path / "in").mkdir()
    save_nifti(tmp_path / "in" / "a.nii.gz", np.full((9, 8, 7), 1.5, np.float32), np.eye(4))
    assert seg_run(["predict", str(bundle), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("seg-run: error:"), err
    assert phrase in err and str(bundle) in err, err
    assert not (tmp_path / "out" / "a.nii.gz").exists()


def test_the_bundle_corpus_is_large_enough() -> None:
    assert len(BUNDLES) + len(CHECKPOINTS) >= 20


def _spoil_weights(ck, how: str):  # noqa: ANN001, ANN202
    import dataclasses

    import torch

    weights = dict(ck.weights)
    key = next(k for k in weights if k.endswith("weight"))
    if how == "missing":
        weights.pop(key)
    elif how == "shape":
        weights[key] = torch.zeros(3, 3)
    elif how == "nan":
        weights[key] = torch.full_like(weights[key], float("nan"))
    return dataclasses.replace(ck, weights=weights)


CHECKPOINTS: dict[str, str] = {
    "missing_file": "checkpoint not found",
    "not_torch": "not a readable seg checkpoint",
    "pickled_object": "not a readable seg checkpoint",
    "no_state_dict": "not a seg checkpoint",
    "invalid_config": "invalid config",
    "missing_weights": "missing keys",
    "wrong_shapes": "shape mismatches",
    "nan_weights": "NaN or Inf weights",
    "empty_run_folder": "holds no checkpoint",
    "format_too_new": "newer than this seg understands",
}


class Opaque:
    """Not a tensor or plain value: torch.load(weights_only=True) must refuse it."""


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_a_malformed_checkpoint_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       name: str) -> None:
    import torch

    from seg.cli import main as seg
    from seg.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from seg.models import create_model
    from tests.conftest import tiny_config

    cfg = tiny_config(tmp_path, 3, "model.deep_supervision=false")
    good = save_checkpoint(Checkpoint(tmp_path / "good.pt", cfg.to_dict(), create_model(cfg).state_dict()))
    path = tmp_path / f"{name}.pt"
    if name == "not_torch":
        path.write_bytes(b"PK\x03\x04 not a zip")
    elif name == "pickled_object":
        torch.save({"state_dict": {}, "config": cfg.to_dict(), "extra": Opaque()}, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    elif name == "no_state_dict":
        torch.save({"config": cfg.to_dict()}, path)
    elif name == "invalid_config":
        save_checkpoint(Checkpoint(path, {**cfg.to_dict(), "unknown_section": 1}, dict(load_checkpoint(good).weights)))
    elif name in ("missing_weights", "wrong_shapes", "nan_weights"):
        how = {"missing_weights": "missing", "wrong_shapes": "shape", "nan_weights": "nan"}[name]
        save_checkpoint(_spoil_weights(load_checkpoint(good), how), path)
    elif name == "empty_run_folder":
        path = tmp_path / "empty_run"
        path.mkdir()
    elif name == "format_too_new":
        data = torch.load(good, weights_only=True)
        torch.save({**data, "format": 99}, path)
    (tmp_path / "in").mkdir()
    save_nifti(tmp_path / "in" / "a.nii.gz", np.full((9, 8, 7), 1.5, np.float32), np.eye(4))
    assert seg(["predict", "--model", str(path), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("seg predict: error:"), err
    assert CHECKPOINTS[name] in err and str(path) in err, err
    assert not (tmp_path / "out").exists()
