"""The network backend: the object a runner hands patches to, whatever runs the network.

An onnxruntime session (:class:`seg_runtime.session.OnnxBackend`), a torch module or a fold
ensemble (``seg.inference``) are backends. A runner gets one, already built, and never changes it;
runners that work in other processes (Ray actors, service replicas) call :meth:`Backend.recipe`
for a picklable recipe and build their own copy from it there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from .bundle import Bundle


class Backend(Protocol):
    """A loaded network and the description of what it expects.

    Attributes:
        bundle: The model description: grid, patch, channels, labels, parts, defaults.
        tool: The program recorded in the run record (``seg-run``, ``seg predict``).
        default_batch_size: Patches per call when the options do not say.
        digest: The model's identity (SHA-256 of the bundle's model.json, or of the checkpoint): what
            a deployment pins with ``--expect-sha256`` and what the run record ties outputs to.
    """

    bundle: Bundle
    tool: str
    default_batch_size: int
    digest: str

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        """Logits of a batch of patches. Shape: [B, C, *P] -> [B, K, *P], float32."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the run record says about the model (its source, hashes, device)."""
        ...

    def recipe(self, cpus: float | None = None, gpus: float = 0.0) -> Callable[[], Backend]:
        """A picklable callable that builds an equivalent backend in another process.

        Args:
            cpus: CPUs that process may use (threads); None: its own default.
            gpus: GPUs that process holds (a torch backend then runs on CUDA).
        """
        ...
