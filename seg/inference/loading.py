"""Load a trained model as a backend: a run folder, a checkpoint file, or a CV folder (fold ensemble).

``seg predict``, ``seg export`` and the CV's validation all load through :func:`load_backend`. The
model is built from the checkpoint's config as trained (deep-supervision heads included), its
weights are loaded strictly, and only then are the training-only heads dropped: an empty, partial
or foreign state dict is an error, never a model with random weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from seg.engine.checkpoint import load_checkpoint, resolve_checkpoint
from seg.engine.device import resolve_device
from seg.errors import CheckpointError
from seg.inference.backend import TorchBackend
from seg.inference.bundle_meta import bundle_from_config
from seg.inference.ensemble import ensemble_backend, fold_checkpoints, is_cv_folder
from seg.models import prepare_export
from seg_runtime.hashing import sha256_file


class CheckpointRecipe:
    """Loads a checkpoint, run folder or CV folder on a given device (picklable: holds paths).

    ``recipe(device)`` returns the backend, so a Ray actor builds its own copy where it runs.
    """

    def __init__(self, source: str | Path, folds: Sequence[int] | None = None) -> None:
        self.source = str(source)
        self.folds = None if folds is None else list(folds)

    def __call__(self, device: str = "auto") -> TorchBackend:
        return load_backend(self.source, device=device, folds=self.folds)


def checkpoint_backend(path: str | Path, device: str = "auto") -> TorchBackend:
    """One trained network (``best.pt``, else ``last.pt``, of a run folder, or a checkpoint file).

    Raises:
        CheckpointError: the file is not a seg checkpoint, or its weights do not fit its config.
        ConfigError: its config is invalid, or ``device`` is not a device name.
    """
    torch_device = resolve_device(device)  # a bad device string fails before the slow load
    ck_path = resolve_checkpoint(path)
    checkpoint = load_checkpoint(ck_path)
    cfg = checkpoint.config
    model = prepare_export(checkpoint.build_model())
    bundle = bundle_from_config(cfg, {"checkpoint": str(ck_path)})
    return TorchBackend(model, cfg, bundle, torch_device, ck_path, {"config_hash": cfg.digest()},
                        rebuild=CheckpointRecipe(ck_path), digest=sha256_file(ck_path))


def load_backend(path: str | Path, device: str = "auto", folds: Sequence[int] | None = None) -> TorchBackend:
    """A run folder, a checkpoint file, or a CV folder (its folds, or ``folds``, as one ensemble).

    Raises:
        CheckpointError: ``folds`` for anything but a CV folder; see :func:`checkpoint_backend`.
        EnsembleError: missing folds, or folds that differ in inputs, labels, patch or preprocessing.
    """
    if is_cv_folder(path):
        pairs = fold_checkpoints(path, folds)
        members = [checkpoint_backend(checkpoint, device) for _, checkpoint in pairs]
        return ensemble_backend(Path(path), pairs, members, rebuild=CheckpointRecipe(path, [f for f, _ in pairs]))
    if folds is not None:
        raise CheckpointError(f"{path}: --folds needs a cross-validation folder (one holding cv.json)")
    return checkpoint_backend(path, device)
