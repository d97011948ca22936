"""Training: a tiny run writes a complete run folder, resumes exactly, refuses to clobber, stops on NaN."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from seg.config import Config
from seg.engine.checkpoint import load_checkpoint
from seg.engine.fit import TrainingError, fit

from ..conftest import tiny_config
from .test_run_folder_readme import assert_run_folder_matches_readme


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return dict(load_checkpoint(path).training.model_state)


def test_tiny_run_writes_run_folder(tiny3d: Config, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="seg")  # as the seg CLI sets it: train.log gets the INFO lines
    result = fit(tiny3d, progress=False)
    run = result.run_dir
    assert_run_folder_matches_readme(run)  # README's list of the run folder's files, TensorBoard included
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["train_loss"] > 0 and "val_dice_lesion" in r for r in rows)
    ck = load_checkpoint(run / "last.pt")
    assert ck.epoch == 2 and ck.config.data.labels == {"background": 0, "lesion": 1, "organ": 2}
    assert ck.provenance["labels"] == ck.config.data.labels  # also stored plainly, for other readers
    assert ck.config_dict["train"]["epochs"] == 2 and ck.provenance["versions"]["seg"]
    with pytest.raises(TrainingError, match="--resume"):
        fit(tiny3d, progress=False)


@pytest.mark.parametrize("workers", [0, 1])  # loader workers are reseeded per epoch too
def test_resume_matches_uninterrupted_run(tmp_path: Path, workers: int) -> None:
    extra = ("train.deterministic=true", "train.epochs=2", f"data.num_workers={workers}")
    full = tiny_config(tmp_path / "a", 3, *extra)
    fit(full, progress=False)
    half = tiny_config(tmp_path / "b", 3, *extra)
    fit(half, progress=False, stop_after=1)  # as if the job was killed after epoch 1
    fit(half, resume=True, progress=False)
    a = _weights(tmp_path / "a" / "runs" / "demo3d" / "last.pt")
    b = _weights(tmp_path / "b" / "runs" / "demo3d" / "last.pt")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    rows = (tmp_path / "b" / "runs" / "demo3d" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2]


def test_resume_extends_finished_run(tiny3d: Config) -> None:
    tiny3d.train.epochs = 1
    fit(tiny3d, progress=False)
    tiny3d.train.epochs = 2
    result = fit(tiny3d, resume=True, progress=False)
    assert result.epochs_done == 2
    assert load_checkpoint(result.run_dir / "last.pt").epoch == 2


def test_nothing_to_resume(tiny3d: Config) -> None:
    with pytest.raises(TrainingError, match="nothing to resume"):
        fit(tiny3d, resume=True, progress=False)


def test_nan_loss_stops_with_clear_message(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, 3, "train.lr=1e30", "train.grad_clip=null", "train.epochs=3")
    with pytest.raises(TrainingError, match="diverged"):
        fit(cfg, progress=False)


def test_2d_run(tiny2d: Config) -> None:
    result = fit(tiny2d, progress=False)
    assert (result.run_dir / "best.pt").is_file()


def _last_row(run: Path) -> dict:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["ag_unet", "gla_unet"])
def test_bf16_training_on_cuda_learns_as_fp32_on_cpu(tmp_path: Path, cuda: torch.device, model: str) -> None:
    """The same run on CUDA (bf16 autocast, fla kernels for GLA) and on the CPU (float32) reaches a
    comparable validation Dice; the CUDA checkpoint loads on the CPU and predicts there."""
    params = "{channels: [8, 16, 32]}" if model == "ag_unet" else "{channels: [8, 16, 32], conv_levels: 1, depths: [1, 1]}"
    extra = ("train.epochs=6", "train.iters_per_epoch=10", "train.val_every=6", "train.val_cases=2",
             f"model.name={model}", f"model.params={params}")
    dice = {}
    for device in ("cpu", "cuda"):
        cfg = tiny_config(tmp_path / device, 3, *extra, f"train.device={device}")
        result = fit(cfg, progress=False)
        row = _last_row(result.run_dir)
        assert math.isfinite(row["train_loss"])
        dice[device] = row["val_dice_mean"]
    print(f"{model}: val Dice after 60 steps, cpu fp32 {dice['cpu']:.3f}, cuda bf16 {dice['cuda']:.3f}")
    assert dice["cuda"] > 0.25 and dice["cuda"] >= dice["cpu"] - 0.15
    run = tmp_path / "cuda" / "runs" / "demo3d"
    ck = load_checkpoint(run / "last.pt")  # mapped to the CPU
    assert all(t.device.type == "cpu" for t in ck.weights.values())
    from seg.inference import load_backend

    predictor = load_backend(run, device="cpu")
    x = np.random.default_rng(0).standard_normal((1, 1, 32, 32, 32)).astype(np.float32)
    assert predictor.predict_batch(x).shape[:2] == (1, 3)
