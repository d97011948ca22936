"""``seg predict --backend onnx``: the network exported to ONNX in memory once, run by onnxruntime.

On a CPU onnxruntime runs our networks several times faster than eager torch (measured on one
thread: 28 ms vs 131 ms per 32^3 patch), so ``--backend auto`` picks it when the predictor is on
the CPU. The export is checked against torch on one patch before it is used; a network that does
not export, or does not match, keeps the torch path with a warning. Everything else (cases,
preprocessing, sliding window, writing) is the shared ``seg_runtime`` pipeline either way.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable

import numpy as np
import torch

from seg.inference.predictor import Predictor
from seg_runtime.session import session_options

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")


PredictBatch = Callable[[np.ndarray], np.ndarray]


def onnx_predict_batch(predictor: Predictor, threads: int | None = None) -> PredictBatch:
    """Export ``predictor.model`` to ONNX in memory and return an onnxruntime (CPU) ``predict_batch``.

    Raises:
        RuntimeError: The export fails or its logits differ from torch's beyond
            ``export.tolerance`` on a test patch.
    """
    import onnxruntime as ort

    cfg = predictor.cfg
    shape = (1, cfg.data.in_channels, *cfg.patch_size)
    model = predictor.model
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(shape),), buffer, dynamo=False, opset_version=cfg.export.opset,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    session = ort.InferenceSession(buffer.getvalue(), sess_options=session_options(threads),
                                   providers=["CPUExecutionProvider"])

    def predict_batch(x: np.ndarray) -> np.ndarray:
        """Logits of a batch of patches. Shape: [B, C, *P] -> [B, K, *P]"""
        return session.run(None, {"image": np.ascontiguousarray(x, dtype=np.float32)})[0]

    probe = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    diff = float(np.abs(predict_batch(probe) - predictor.predict_batch(probe)).max())
    if diff > cfg.export.tolerance:
        tolerance = cfg.export.tolerance
        raise RuntimeError(f"onnxruntime differs from torch by {diff:.3g} (tolerance {tolerance:.3g})")
    log.info("seg predict: onnxruntime backend (CPU), parity %.3g", diff)
    return predict_batch


def use_backend(predictor: Predictor, backend: str, threads: int | None = None) -> str:
    """Route ``predictor``'s patches through the chosen backend; returns the one in use.

    ``auto`` and ``onnx`` use onnxruntime when the predictor is on the CPU; on a GPU torch stays
    (onnxruntime on CUDA is the deploy runtime's business: ``seg export`` + ``seg-run``). A failed
    export keeps ``torch`` with a warning, so the run still works.
    """
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "torch":
        return "torch"
    if predictor.device.type != "cpu":
        if backend == "onnx":
            log.warning("seg predict: --backend onnx runs on the CPU only; using torch on %s",
                        predictor.device)
        return "torch"
    try:
        batch = onnx_predict_batch(predictor, threads)
    except Exception as exc:  # export support varies by network; torch always works
        log.warning("seg predict: onnxruntime backend unavailable (%s: %s); using torch",
                    type(exc).__name__, exc)
        return "torch"
    # The instance attribute shadows the torch method: Predictor.predict_folder calls self.predict_batch.
    predictor.predict_batch = batch  # type: ignore[method-assign]
    return "onnx"
