"""``Predictor``: a trained model loaded once, applied to scan folders (``seg predict``).

The folder loop — case discovery, reading with geometry, preprocessing, Gaussian sliding window,
mirroring TTA, inverse to the input geometry, atomic writes, the manifest, skip-done, sharding
and per-case isolation — is ``seg_runtime.batch.predict_folder``, shared with the deploy runtime.
Only the network call differs: here it is the torch model (bf16 autocast on CUDA).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seg.config import Config, config_from_dict
from seg.engine.checkpoint import load_checkpoint, load_weights, resolve_checkpoint
from seg.engine.device import resolve_device
from seg.errors import CheckpointError
from seg.inference.bundle_meta import bundle_from_config
from seg.models import create_model, prepare_export
from seg_runtime.batch import predict_folder
from seg_runtime.manifest import RunManifest

log = logging.getLogger(__name__)


class Predictor:
    """A model ready for inference.

    Args:
        model: the network (eval mode, deep supervision off).
        cfg: its resolved config.
        device: where it runs.
        source: the checkpoint it came from (for the manifest).
    """

    def __init__(self, model: torch.nn.Module, cfg: Config, device: torch.device, source: str = "") -> None:
        self.model = model.to(device).eval()
        self.cfg = cfg
        self.device = device
        self.source = source
        self.folds: list[int] | None = None  # the members of a fold ensemble (seg.inference.ensemble)
        self.config_hash = cfg.digest()  # the run's own hash, before any CLI tweak of cfg.infer
        self.bundle = bundle_from_config(cfg, {"checkpoint": source})

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto",
                        folds: list[int] | None = None) -> Predictor:
        """Load a run folder (``best.pt``, else ``last.pt``), a checkpoint file, or a CV folder.

        A cross-validation folder (``cv.json``) loads as a fold ensemble of all its folds or of
        ``folds`` (see :mod:`seg.inference.ensemble`); ``folds`` is an error for anything else.

        The model is built from the config as trained (deep-supervision heads included), its
        weights are loaded strictly, and only then are the training-only heads dropped: an
        empty, partial or foreign state dict is an error, never a model with random weights.

        Raises:
            CheckpointError: the file is not a seg checkpoint, or its weights do not fit its config.
            ConfigError: its config is invalid, or ``device`` is not a device name.
        """
        from seg.inference.ensemble import is_cv_folder, load_fold_ensemble

        if is_cv_folder(path):
            return load_fold_ensemble(path, folds, device)
        if folds is not None:
            raise CheckpointError(f"{path}: --folds needs a cross-validation folder (one holding cv.json)")
        torch_device = resolve_device(device)  # a bad device string fails before the slow load
        ck_path = resolve_checkpoint(path)
        ck = load_checkpoint(ck_path)
        cfg = config_from_dict(ck["config"], str(ck_path))
        model = create_model(cfg)
        load_weights(model, ck["state_dict"], ck_path)
        return cls(prepare_export(model), cfg, torch_device, str(ck_path))

    @torch.inference_mode()
    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        """Logits of a batch of patches.

        Shape: [B, C, *P] -> [B, K, *P]
        """
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            out = self.model(t)
        return out.float().cpu().numpy()

    def predict_folder(self, input_path: str | Path, output_dir: str | Path, *, tta: bool | None = None,
                       **kwargs: Any) -> RunManifest:
        """Predict every case under ``input_path`` into ``output_dir`` (see seg_runtime.batch).

        ``engine="ray"`` (with ``ray_options``) runs the cases on Ray Data: each actor loads
        this checkpoint once (on its GPU share when ``gpus_per_worker > 0``).
        """
        info = {"name": self.cfg.model.name, "checkpoint": self.source, "config_hash": self.config_hash,
                "device": str(self.device)}
        if kwargs.pop("engine", "local") == "ray":
            from seg_runtime.ray_engine import RayJob, RayOptions

            options = kwargs.pop("ray_options", None) or RayOptions()
            device = "cuda" if options.gpus_per_worker > 0 else "cpu"
            kwargs["ray"] = RayJob(TorchModelFactory(self.source, device, self.folds), options)
        return predict_folder(input_path, output_dir, bundle=self.bundle, predict_batch=self.predict_batch,
                              tta=self.bundle.tta if tta is None else tta, tool="seg predict",
                              model_info=info, batch_size=self.cfg.infer.batch_size, **kwargs)


class TorchModelFactory:
    """Loads a checkpoint inside each Ray actor and returns its ``predict_batch`` (picklable).

    Args:
        checkpoint: The checkpoint file (or run folder, or CV folder).
        device: Where the actor runs the model (``cpu``, ``cuda``; ``auto`` picks).
    """

    def __init__(self, checkpoint: str | Path, device: str = "auto", folds: list[int] | None = None) -> None:
        self.checkpoint = str(checkpoint)
        self.device = device
        self.folds = folds

    def __call__(self):  # -> PredictBatch
        return Predictor.from_checkpoint(self.checkpoint, device=self.device, folds=self.folds).predict_batch
