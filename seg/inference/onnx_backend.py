"""``seg predict --backend onnx``: the network exported to ONNX in memory once, run by onnxruntime.

On a CPU onnxruntime runs our networks several times faster than eager torch (measured on one
thread: 28 ms vs 131 ms per 32^3 patch), so ``--backend auto`` picks it when the model is on the
CPU. The export is checked against torch on one patch before it is used; a network that does not
export, or does not match, keeps the torch backend with a warning. Everything else (cases,
preprocessing, sliding window, writing) is the shared ``seg_runtime`` pipeline either way.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from seg.inference.backend import TorchBackend
from seg.inference.onnx_graph import export_graph, parity, run_session
from seg_runtime.session import session_options

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")


class InMemoryOnnxBackend:
    """A :class:`TorchBackend`'s network as an in-memory ONNX graph on onnxruntime's CPU provider.

    Everything but :meth:`predict_batch` is the torch backend's (its bundle, record, and recipe:
    Ray actors rebuild the torch model).

    Raises:
        RuntimeError: the export fails or its logits differ from torch's beyond ``export.tolerance``
            (or are not finite) on a test patch.
    """

    tool = TorchBackend.tool

    def __init__(self, torch_backend: TorchBackend, threads: int | None = None) -> None:
        import onnxruntime as ort

        cfg = torch_backend.cfg
        self.torch_backend = torch_backend
        self.bundle = torch_backend.bundle
        self.default_batch_size = torch_backend.default_batch_size
        self.digest = torch_backend.digest
        shape = (1, cfg.data.in_channels, *cfg.patch_size)
        buffer = io.BytesIO()
        export_graph(torch_backend.model, shape, buffer, cfg.export.opset)
        self.session = ort.InferenceSession(buffer.getvalue(), sess_options=session_options(threads),
                                            providers=["CPUExecutionProvider"])
        probe = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        diff = parity(torch_backend.predict_batch, self.session, probe)
        if not diff <= cfg.export.tolerance:
            raise RuntimeError(f"onnxruntime differs from torch by {diff:.3g} (tolerance {cfg.export.tolerance:.3g})")
        log.info("seg predict: onnxruntime backend (CPU), parity %.3g", diff)

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        """Logits of a batch of patches. Shape: [B, C, *P] -> [B, K, *P]"""
        return run_session(self.session, x)

    def describe(self) -> dict[str, Any]:
        return self.torch_backend.describe()

    def recipe(self, cpus: float | None = None, gpus: float = 0.0) -> Callable[[], Any]:
        return self.torch_backend.recipe(cpus, gpus)


def choose_backend(torch_backend: TorchBackend, backend: str, threads: int | None = None) -> Any:
    """The backend ``--backend`` asks for: ``torch`` as given, or onnxruntime when it can serve.

    ``auto`` and ``onnx`` use onnxruntime when the model is on the CPU; on a GPU torch stays
    (onnxruntime on CUDA is the deploy runtime's business: ``seg export`` + ``seg-run``). A failed
    export keeps torch with a warning, so the run still works.
    """
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "torch":
        return torch_backend
    if torch_backend.device.type != "cpu":
        if backend == "onnx":
            log.warning("seg predict: --backend onnx runs on the CPU only; using torch on %s", torch_backend.device)
        return torch_backend
    try:
        return InMemoryOnnxBackend(torch_backend, threads)
    except Exception as exc:  # export support varies by network; torch always works
        log.warning("seg predict: onnxruntime backend unavailable (%s: %s); using torch", type(exc).__name__, exc)
        return torch_backend
