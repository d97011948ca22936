"""Checkpoint -> deploy bundle: ``model.onnx`` + ``model.json``, checked and parity-tested.

The graph takes patches of the training patch size with a dynamic batch axis; the runtime tiles
every image into such patches, so any image size works. (Spatial axes are fixed because the
models pad inputs to a multiple of their reduction with shape arithmetic that the TorchScript
exporter would freeze anyway; a fixed patch also lets TensorRT build one engine.)
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seg.inference.predictor import Predictor
from seg_runtime.bundle import save_bundle_json

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The export failed its checks (the message says which and by how much)."""


@dataclass
class ExportReport:
    """Where the bundle is and how closely onnxruntime matches torch."""

    bundle_dir: Path
    max_abs_diff_random: float
    max_abs_diff_realistic: float
    tolerance: float


def _realistic_input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A smooth blob image with noise, z-scored: closer to a scan than white noise.

    Shape: [1, C, *P]
    """
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape[2:]], indexing="ij")
    radius = np.sqrt(sum(g**2 for g in grids))
    base = np.exp(-(radius**2) * 4.0)
    img = np.stack([base * (1 + 0.3 * c) for c in range(shape[1])])[None]
    img = img + 0.1 * rng.standard_normal(img.shape)
    return ((img - img.mean()) / (img.std() + 1e-6)).astype(np.float32)


def _onnx_export(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    os.replace(tmp, path)


def _to_fp16(path: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.save(model, str(path))


def _parity(predictor: Predictor, session, x: np.ndarray) -> float:
    ref = predictor.predict_batch(x)
    got = session.run(None, {"image": x})[0]
    if got.shape != ref.shape:
        raise ExportError(f"onnx output shape {got.shape} differs from torch {ref.shape}")
    return float(np.abs(got.astype(np.float32) - ref).max())


def export_bundle(checkpoint: str | Path, out_dir: str | Path, *, fp16: bool | None = None,
                  opset: int | None = None, tolerance: float | None = None) -> ExportReport:
    """Export a run folder or checkpoint to a deploy bundle and check it.

    Runs ``onnx.checker`` and compares onnxruntime (CPU) with torch on a random and a realistic
    input; raises :class:`ExportError` when the max abs difference of the logits exceeds the
    tolerance (``export.tolerance``, looser for fp16).
    """
    import onnx
    import onnxruntime as ort

    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    cfg = predictor.cfg
    fp16 = cfg.export.fp16 if fp16 is None else fp16
    opset = opset or cfg.export.opset
    tol = tolerance if tolerance is not None else (max(cfg.export.tolerance, 5e-2) if fp16 else cfg.export.tolerance)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shape = (1, cfg.data.in_channels, *cfg.patch_size)
    onnx_path = out / "model.onnx"
    _onnx_export(predictor.model, torch.zeros(shape), onnx_path, opset)
    if fp16:
        _to_fp16(onnx_path)
    onnx.checker.check_model(str(onnx_path))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    diff_random = _parity(predictor, session, rng.standard_normal(shape).astype(np.float32))
    diff_real = _parity(predictor, session, _realistic_input(shape))
    log.info("parity: max abs diff %.3g (random), %.3g (realistic), tolerance %.3g", diff_random, diff_real, tol)
    if max(diff_random, diff_real) > tol:
        raise ExportError(f"onnxruntime differs from torch by {max(diff_random, diff_real):.3g} "
                          f"(tolerance {tol:.3g}); the bundle in {out} is not trustworthy")
    bundle = predictor.bundle
    bundle.provenance.update({"opset": opset, "fp16": fp16, "parity_max_abs_diff": max(diff_random, diff_real)})
    save_bundle_json(bundle, out)
    return ExportReport(out, diff_random, diff_real, tol)
