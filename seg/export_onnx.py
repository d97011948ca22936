"""Checkpoint -> deploy bundle: ``model.onnx`` + ``model.json``, checked and parity-tested.

The graph is :func:`seg.inference.onnx_graph.export_graph`'s (patches of the training patch size,
dynamic batch). The export is atomic: the bundle is built and checked in a hidden sibling folder, then renamed
into place, so a failed (re-)export leaves the previous bundle as it was and no stray files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seg.errors import SegError
from seg.inference.backend import TorchBackend
from seg.inference.loading import load_backend
from seg.inference.onnx_graph import export_graph, parity
from seg_runtime.atomic import atomic_path, stage_dir
from seg_runtime.bundle import BUNDLE_JSON, save_bundle_json

log = logging.getLogger(__name__)


class ExportError(SegError, RuntimeError):
    """The export failed its checks (the message says which and by how much)."""


@dataclass
class ExportReport:
    """Where the bundle is and how closely onnxruntime matches torch."""

    bundle_dir: Path
    max_abs_diff_random: float
    max_abs_diff_realistic: float
    tolerance: float

    def parity_rows(self) -> tuple[list[str], list[list[str]]]:
        """Headers and rows of the parity table, numbers as the log writes them (``%.3g``: 3.27e-05,
        never a 0.0000 that hides the difference)."""
        rows = [["random input", self.max_abs_diff_random], ["realistic input", self.max_abs_diff_realistic]]
        return (["parity: onnxruntime vs torch", "max |diff| of logits", "tolerance"],
                [[name, f"{diff:.3g}", f"{self.tolerance:.3g}"] for name, diff in rows])


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


def _to_fp16(path: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def _parity(backend: TorchBackend, session, x: np.ndarray) -> float:
    try:
        return parity(backend.predict_batch, session, x)
    except ValueError as exc:
        raise ExportError(str(exc)) from None


BUNDLE_FILES = ("model.onnx", BUNDLE_JSON)


def stage_bundle_dir(out: Path) -> Path:
    """A fresh hidden sibling of ``out`` (same file system, so the final rename is atomic)."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder; choose a bundle folder")
    if out.is_dir() and any(out.iterdir()) and not (out / BUNDLE_JSON).is_file():
        raise ExportError(f"{out}: folder is not empty and holds no {BUNDLE_JSON} (not a bundle); "
                          "choose a new or empty folder")
    return stage_dir(out, suffix=".export")


def swap_into_place(stage: Path, out: Path) -> None:
    """Replace ``out`` by ``stage``; files of an old bundle other than the model travel along."""
    if not out.exists():
        os.replace(stage, out)
        return
    for entry in out.iterdir():
        if entry.name not in BUNDLE_FILES and not (stage / entry.name).exists():
            os.replace(entry, stage / entry.name)
    old = stage.with_name(stage.name + ".old")
    os.replace(out, old)
    os.replace(stage, out)
    shutil.rmtree(old, ignore_errors=True)


def export_bundle(checkpoint: str | Path, out_dir: str | Path, *, fp16: bool | None = None,
                  opset: int | None = None, tolerance: float | None = None,
                  folds: list[int] | None = None) -> ExportReport:
    """Export a run folder, checkpoint or CV folder to a deploy bundle and check it.

    A CV folder exports its fold ensemble (all folds, or ``folds``) as one ONNX graph that
    averages the folds' probabilities (see :mod:`seg.inference.ensemble`).

    Runs ``onnx.checker`` and compares onnxruntime (CPU) with torch on a random and a realistic
    input; raises :class:`ExportError` when the max abs difference of the logits exceeds the
    tolerance (``export.tolerance``, looser for fp16) or is not finite. The bundle is written and
    checked in a temporary sibling folder and renamed to ``out_dir`` only when every check passed.

    Raises:
        CheckpointError: the checkpoint is unreadable or its weights do not fit its config.
        ExportError: a check failed (``out_dir`` is left as it was).
    """
    backend = load_backend(checkpoint, device="cpu", folds=folds)
    cfg = backend.cfg
    fp16 = cfg.export.fp16 if fp16 is None else fp16
    opset = opset or cfg.export.opset
    tol = tolerance if tolerance is not None else (max(cfg.export.tolerance, 5e-2) if fp16 else cfg.export.tolerance)
    out = Path(out_dir)
    stage = stage_bundle_dir(out)
    try:
        diff_random, diff_real = _write_checked(backend, stage, fp16, opset, tol, out)
        swap_into_place(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return ExportReport(out, diff_random, diff_real, tol)


def _write_checked(backend: TorchBackend, stage: Path, fp16: bool, opset: int, tol: float,
                   out: Path) -> tuple[float, float]:
    """Write model.onnx + model.json into ``stage`` and run the checks; the two parity diffs."""
    import onnx
    import onnxruntime as ort

    cfg = backend.cfg
    shape = (1, cfg.data.in_channels, *cfg.patch_size)
    onnx_path = stage / "model.onnx"
    with atomic_path(onnx_path) as tmp:
        export_graph(backend.model, shape, str(tmp), opset)
    if fp16:
        _to_fp16(onnx_path)
    onnx.checker.check_model(str(onnx_path))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    diff_random = _parity(backend, session, rng.standard_normal(shape).astype(np.float32))
    diff_real = _parity(backend, session, _realistic_input(shape))
    log.info("parity: max abs diff %.3g (random), %.3g (realistic), tolerance %.3g", diff_random, diff_real, tol)
    worst = max(diff_random, diff_real) if np.isfinite([diff_random, diff_real]).all() else float("nan")
    if not worst <= tol:  # NaN (non-finite logits) fails too
        raise ExportError(f"{out}: onnxruntime differs from torch by {worst:.3g} (tolerance {tol:.3g}); "
                          "nothing was written (a previous bundle there is unchanged)")
    bundle = dataclasses.replace(backend.bundle, provenance=dict(backend.bundle.provenance))
    bundle.provenance.update({"opset": opset, "fp16": fp16, "parity_max_abs_diff": worst})
    save_bundle_json(bundle, stage)
    return diff_random, diff_real
