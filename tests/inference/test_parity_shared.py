"""``seg predict`` (torch) vs ``seg-run`` (onnxruntime) on real data: one BraTS case, one ISBI slice.

The model is tiny, seeded and briefly fitted to the case itself (so it predicts real structure
with confident and uncertain regions alike), exported with ``export_bundle``, then both CLIs
predict the same input. Labels must agree on >= 99.9% of voxels; the float32 probabilities of
the two predictors (same seg_runtime tiling, only the network call differs) within 1e-3 (measured:
about 1e-4 on BraTS, where instance norm on near-constant background patches amplifies float
rounding, and 3e-6 on ISBI).
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from seg.cli import main as seg
from seg.config import load_config
from seg.engine.checkpoint import Checkpoint, save_checkpoint
from seg.export_onnx import export_bundle
from seg.inference import TorchBackend, load_backend
from seg_runtime.cases import discover_cases
from seg_runtime.cli import main as seg_run
from seg_runtime.io import read_case, read_image
from seg_runtime.preprocess import preprocess_image, preprocess_label

from ..conftest import REPO

pytestmark = [pytest.mark.data, pytest.mark.slow]
log = logging.getLogger(__name__)
PROBABILITY_TOLERANCE = 1e-3
TINY = ["model.deep_supervision=false", "model.params={channels: [4, 8, 16]}"]


def _fit_briefly(predictor: TorchBackend, image: np.ndarray, label: np.ndarray, steps: int = 10) -> None:
    """A few Adam steps with the config's loss (classes or regions) on crops (32 voxels a side)
    around foreground voxels of one preprocessed case (deterministic)."""
    from seg.losses import build_loss

    loss_fn = build_loss(predictor.cfg, deep_supervision=False)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model, patch = predictor.model.train(), [min(p, 32) for p in predictor.bundle.patch_size]
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    foreground = np.argwhere(label > 0)
    for _ in range(steps):
        # crops around a random foreground voxel: sparse structures (a tumour) get learnt at all
        centre = foreground[rng.integers(len(foreground))] if len(foreground) else np.zeros(label.ndim, int)
        corner = [int(np.clip(c - p // 2, 0, s - p)) for c, s, p in zip(centre, image.shape[1:], patch, strict=True)]
        window = tuple(slice(c, c + p) for c, p in zip(corner, patch, strict=True))
        x = torch.from_numpy(np.ascontiguousarray(image[(slice(None), *window)]))[None]
        y = torch.from_numpy(label[window].astype(np.float32))[None, None]
        loss = loss_fn(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()


def _bundle(
    config: str, overrides: list[str], case_input: Path, label_path: Path, tmp: Path
) -> tuple[Path, Path]:
    """Checkpoint (fitted for a few steps on the case) and its exported bundle."""
    cfg = load_config(REPO / "configs" / config, [f"output_dir={tmp}", *TINY, *overrides])
    torch.manual_seed(0)
    checkpoint = tmp / "model.pt"
    from seg.models import create_model

    save_checkpoint(Checkpoint(checkpoint, cfg.to_dict(), create_model(cfg).state_dict()))
    predictor = load_backend(checkpoint, device="cpu")
    case = discover_cases(
        case_input,
        spatial_dims=cfg.data.spatial_dims,
        in_channels=cfg.data.in_channels,
        channel_files=cfg.data.channel_files,
    )[0][0]
    image, geometry = read_case(case, cfg.data.spatial_dims, cfg.data.in_channels)
    prepared, _ = preprocess_image(image, geometry, predictor.bundle.preprocess)
    raw_label, _ = read_image(label_path)
    label = _class_indices(np.asarray(raw_label), cfg.data.label_values)
    label = preprocess_label(label, geometry, predictor.bundle.preprocess)
    _fit_briefly(predictor, prepared, label)
    save_checkpoint(Checkpoint(checkpoint, cfg.to_dict(), predictor.model.state_dict()))
    return checkpoint, export_bundle(checkpoint, tmp / "bundle").bundle_dir


def _class_indices(label: np.ndarray, values: dict[int, int] | None) -> np.ndarray:
    if not values:
        return label.astype(np.int64)
    out = np.zeros(label.shape, np.int64)
    for stored, index in values.items():
        out[label == stored] = index
    return out


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """The float32 model-grid probabilities of every case either CLI predicts, in call order.

    The spy asks the tiling for float32 and hands the folder loop the float16 it would have
    made itself (rounding once either way), so the labels are exactly those of a plain run.
    """
    import seg_runtime.stages as batch

    results: list[np.ndarray] = []
    original = batch.sliding_window_inference

    def spy(*args: object, **kwargs: object) -> np.ndarray:
        probabilities = original(*args, **{**kwargs, "dtype": np.float32})
        results.append(probabilities)
        return probabilities.astype(kwargs.get("dtype", np.float32))

    monkeypatch.setattr(batch, "sliding_window_inference", spy)
    return results


def _compare(
    torch_labels: np.ndarray, onnx_labels: np.ndarray, probabilities: list[np.ndarray], name: str
) -> None:
    assert len(probabilities) == 2 and probabilities[0].shape == probabilities[1].shape
    diff = float(np.abs(probabilities[0] - probabilities[1]).max())
    agreement = float(np.mean(torch_labels == onnx_labels))
    log.warning("%s: label agreement %.6f, probability max abs diff %.3g", name, agreement, diff)
    assert len(np.unique(torch_labels)) >= 2, "the fitted model should predict more than one class"
    assert agreement >= 0.999
    assert diff <= PROBABILITY_TOLERANCE


@pytest.mark.parametrize("outputs", ["classes", "regions"])
def test_brats_case_seg_predict_matches_seg_run(
    shared_data: Path, tmp_path: Path, captured: list[np.ndarray], outputs: str
) -> None:
    case = shared_data / "brats2013-deepmedic" / "brats_2013_pat0003_1"
    checkpoint, bundle = _bundle(
        "brats_ag_unet.yaml", [f"model.outputs={outputs}"], case, case / "OTMultiClass.nii.gz", tmp_path
    )
    assert seg(["predict", "--model", str(checkpoint), "-i", str(case), "-o", str(tmp_path / "torch"),
                "--backend", "torch"]) == 0
    assert seg_run([str(bundle), "-i", str(case), "-o", str(tmp_path / "onnx"), "--provider", "cpu"]) == 0
    name = f"{case.name}.nii.gz"
    torch_labels = np.asarray(nib.load(tmp_path / "torch" / name).dataobj)
    onnx_labels = np.asarray(nib.load(tmp_path / "onnx" / name).dataobj)
    assert torch_labels.shape == (240, 240, 155)
    _compare(torch_labels, onnx_labels, captured, f"brats {outputs}")


def test_isbi_slice_seg_predict_matches_seg_run(
    shared_data: Path, tmp_path: Path, captured: list[np.ndarray]
) -> None:
    root = shared_data / "isbi2012-membrane"
    image = root / "images" / "15.png"
    checkpoint, bundle = _bundle("isbi_ag_unet.yaml", [], image, root / "labels" / "15.png", tmp_path)
    assert seg(["predict", "--model", str(checkpoint), "-i", str(image), "-o", str(tmp_path / "torch"),
                "--backend", "torch"]) == 0
    assert seg_run([str(bundle), "-i", str(image), "-o", str(tmp_path / "onnx"), "--provider", "cpu"]) == 0
    torch_labels = np.asarray(Image.open(tmp_path / "torch" / "15.png"))
    onnx_labels = np.asarray(Image.open(tmp_path / "onnx" / "15.png"))
    assert torch_labels.shape == (512, 512)
    _compare(torch_labels, onnx_labels, captured, "isbi")
