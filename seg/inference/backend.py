"""The torch backend of ``seg predict``: a trained network on a device, as the runtime's runners see it.

The folder loop — discovery, reading with geometry, preprocessing, Gaussian sliding window,
mirroring, the inverse to the input geometry, atomic writes, the run record, skip-done, sharding
and per-case isolation — is ``seg_runtime``'s (:func:`seg_runtime.predict.predict_folder`), shared
with the deploy runtime. Only the network call differs: here a torch module (bf16 autocast on CUDA).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seg.config import Config
from seg.engine.validate import torch_predict_batch
from seg_runtime.bundle import Bundle


class TorchBackend:
    """A network ready for inference and the bundle that describes it.

    Args:
        model: The network (eval mode, training heads dropped): one fold, or a
            :class:`~seg.inference.ensemble.FoldEnsemble`.
        cfg: Its resolved config (post-processing and mirroring as it deploys).
        bundle: The model description (:func:`seg.inference.bundle_meta.bundle_from_config`).
        device: Where it runs.
        source: The checkpoint, run folder or CV folder it came from.
        info: What the run record says about it besides its source and device (name, config hash).
        rebuild: Picklable; ``rebuild(device)`` loads the same model in another process (Ray actors).
        digest: The model's identity: the checkpoint's SHA-256 (a fold ensemble: of its members').
    """

    tool = "seg predict"

    def __init__(self, model: torch.nn.Module, cfg: Config, bundle: Bundle, device: torch.device,
                 source: str | Path, info: dict[str, Any] | None = None,
                 rebuild: Callable[[str], TorchBackend] | None = None, digest: str = "") -> None:
        self.model = model.to(device).eval()
        self.cfg = cfg
        self.bundle = bundle
        self.device = device
        self.source = str(source)
        self.info = dict(info or {})
        self._rebuild = rebuild
        self.digest = digest
        self._predict = torch_predict_batch(self.model, device, amp=True)

    @property
    def default_batch_size(self) -> int:
        """The config's ``infer.batch_size``."""
        return self.cfg.infer.batch_size

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        """Logits of a batch of patches (bf16 autocast on CUDA).

        Shape: [B, C, *P] -> [B, K, *P]
        """
        return self._predict(x)

    def describe(self) -> dict[str, Any]:
        """What the run record says about the model."""
        return {"name": self.cfg.model.name, "checkpoint": self.source, **self.info, "device": str(self.device),
                "sha256": self.digest}

    def recipe(self, cpus: float | None = None, gpus: float = 0.0) -> Callable[[], TorchBackend]:
        """Loads the same checkpoint (or folds) in another process, on CUDA when it holds GPUs."""
        if self._rebuild is None:
            raise ValueError(f"{self.source}: this model was built in memory and cannot be rebuilt elsewhere")
        return functools.partial(self._rebuild, "cuda" if gpus > 0 else "cpu")
