"""Checkpoints load strictly (predict, export, resume): a wrong state dict is one line, never random weights.

Also: provenance hashes are the trained run's, so a bundle or a manifest can be matched to its run.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from seg.cli import main as seg
from seg.config import config_from_dict
from seg.engine.checkpoint import load_checkpoint, save_checkpoint
from seg.engine.fit import fit
from seg.errors import CheckpointError
from seg.inference import load_backend
from seg.models import build_model

from ..conftest import tiny_config

StateEdit = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def _partial(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for i, (k, v) in enumerate(sd.items()) if i % 2 == 0}


def _foreign(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return build_model("monai_unet", spatial_dims=3, in_channels=1, num_classes=3, channels=(4, 8, 16),
                       num_res_units=1).state_dict()


def _wrong_shape(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    key = next(k for k, v in sd.items() if v.ndim == 5)
    return {**sd, key: torch.zeros(*sd[key].shape[:-1], sd[key].shape[-1] + 2)}


BAD_STATES: dict[str, tuple[StateEdit, str]] = {
    "empty": (lambda sd: {}, "missing keys"),
    "partial": (_partial, "missing keys"),
    "foreign": (_foreign, "unexpected keys"),
    "wrong_shape": (_wrong_shape, "shape mismatch"),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 3D run trained with deep supervision (aux heads in its state dict)."""
    tmp = tmp_path_factory.mktemp("strict")
    cfg = tiny_config(tmp, 3, "train.epochs=1", "model.deep_supervision=true")
    return fit(cfg, progress=False).run_dir


def _bad_checkpoint(run: Path, tmp: Path, kind: str, key: str = "state_dict") -> Path:
    ck = load_checkpoint(run / "last.pt")
    spoil = BAD_STATES[kind][0]
    if key == "state_dict":
        ck = dataclasses.replace(ck, weights=spoil(dict(ck.weights)))
    else:
        ck = dataclasses.replace(ck, training=dataclasses.replace(ck.training, model_state=spoil(dict(ck.training.model_state))))
    return save_checkpoint(ck, tmp / f"{kind}.pt")


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_good_checkpoint_loads_the_trained_weights(run: Path) -> None:
    ck = load_checkpoint(run / "best.pt")
    backend = load_backend(run, device="cpu")
    got = backend.model.state_dict()
    assert any(k.startswith("aux_heads.") for k in ck.weights)  # trained with deep supervision ...
    assert not any(k.startswith("aux_heads.") for k in got)  # ... dropped only after the strict load
    assert all(torch.equal(v, ck.weights[k]) for k, v in got.items())


@pytest.mark.parametrize("kind", sorted(BAD_STATES))
def test_bad_state_dict_fails_in_one_line(run: Path, tmp_path: Path, kind: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = _bad_checkpoint(run, tmp_path, kind)
    needle = BAD_STATES[kind][1]
    with pytest.raises(CheckpointError, match=needle) as info:
        load_backend(path, device="cpu")
    assert str(path) in str(info.value)
    images = tmp_path / "in"
    images.mkdir()
    assert seg(["predict", "--model", str(path), "-i", str(images), "-o", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "seg predict: error:", str(path), needle)
    assert seg(["export", str(path), "-o", str(tmp_path / "bundle")]) == 2
    _one_line_error(capsys, "seg export: error:", str(path), needle)
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("kind", ["partial", "wrong_shape"])
def test_resume_from_bad_model_state_fails_in_one_line(run: Path, tmp_path: Path, kind: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    bad = _bad_checkpoint(run, tmp_path, kind, key="model_state")
    shutil.copy(bad, copy / "last.pt")
    assert seg(["train", str(copy / "config.yaml"), "--resume", "--run-dir", str(copy)]) == 2
    _one_line_error(capsys, "seg train: error:", str(copy / "last.pt"), BAD_STATES[kind][1])
    assert (copy / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()  # run left as it was


def test_bundle_and_manifest_carry_the_runs_config_hash(run: Path, tmp_path: Path) -> None:
    trained = config_from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    assert trained.model.deep_supervision  # hashed as trained, not as edited for inference
    assert seg(["export", str(run), "-o", str(tmp_path / "bundle")]) == 0
    bundle = json.loads((tmp_path / "bundle" / "model.json").read_text())
    assert bundle["provenance"]["config_hash"] == trained.digest()
    data_root = Path(trained.data.root)
    case = sorted((data_root / "imagesTs").iterdir())[0]
    assert seg(["predict", "--model", str(run), "-i", str(case), "-o", str(tmp_path / "out"),
                "--batch-size", "3", "--device", "gpu"]) == 0  # gpu: alias of cuda, CPU fallback
    manifest = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert manifest["model"]["config_hash"] == trained.digest()
