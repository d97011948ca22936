"""The trained model on disk: one typed :class:`Checkpoint` and one loader for every reader.

A checkpoint file holds the evaluation weights, the resolved config (with it the label map and
regions), provenance (format, versions, model name) and, for runs that can resume, the training
state (weights as trained, optimiser, scheduler, EMA, epoch, best metric, RNG, split). Written
atomically; read with ``torch.load(weights_only=True)`` (plain tensors, numbers, strings, lists
and dicts only). ``seg predict``, ``seg export``, the CV and ``--resume`` all read it through
:func:`load_checkpoint`, and build its network through :meth:`Checkpoint.build_model`.
"""

from __future__ import annotations

import pickle
import platform
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import seg
from seg.config import Config, config_from_dict
from seg.errors import CheckpointError
from seg_runtime.atomic import atomic_open

CHECKPOINT_FORMAT = 1
_TRAINING_KEYS = ("model_state", "optimizer", "scheduler", "epoch", "best_metric", "rng")


def capture_rng() -> dict[str, Any]:
    """RNG state of python, numpy and torch as weights-only-loadable values."""
    np_state = np.random.get_state()
    state = {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def versions() -> dict[str, str]:
    import monai

    return {"seg": seg.__version__, "torch": str(torch.__version__), "monai": str(monai.__version__),
            "python": platform.python_version()}


@dataclass(frozen=True)
class TrainingState:
    """What ``--resume`` needs besides the config: the run exactly where it stopped."""

    model_state: Mapping[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    epoch: int
    best_metric: float
    rng: dict[str, Any]
    ema: Mapping[str, torch.Tensor] | None = None
    split: dict[str, Any] = field(default_factory=dict)
    interrupted_mid_epoch: bool = False


@dataclass(frozen=True)
class Checkpoint:
    """A trained model on disk.

    Attributes:
        path: The file it was read from (or will be written to).
        config_dict: The resolved config as stored (see :attr:`config` for the validated one).
        weights: The evaluation weights (the EMA's when the run used one), training heads included.
        training: The resumable training state; None in checkpoints written for inference only.
        provenance: Format, versions and model name as stored.
    """

    path: Path
    config_dict: dict[str, Any]
    weights: Mapping[str, torch.Tensor]
    training: TrainingState | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Config:
        """The stored config, validated (ConfigError naming the file when it no longer validates)."""
        return config_from_dict(self.config_dict, str(self.path))

    @property
    def epoch(self) -> int | None:
        """Epochs trained, where the checkpoint records them."""
        return None if self.training is None else self.training.epoch

    def build_model(self, weights: str = "eval") -> nn.Module:
        """The network its config describes, its weights loaded strictly.

        Args:
            weights: ``eval`` (the evaluation weights) or ``trained`` (``training.model_state``).

        Raises:
            CheckpointError: the weights do not fit the model (missing, unexpected or reshaped keys).
            ConfigError: the stored config does not validate.
        """
        from seg.models import create_model

        model = create_model(self.config)
        if weights == "eval":
            load_weights(model, self.weights, self.path)
        elif self.training is None:
            raise CheckpointError(f"{self.path}: not a resumable checkpoint (no 'model_state')")
        else:
            load_weights(model, self.training.model_state, self.path, "model_state")
        return model

    def payload(self) -> dict[str, Any]:
        """The dict written to disk (the format every seg since format 1 reads)."""
        data: dict[str, Any] = {"state_dict": dict(self.weights), "config": self.config_dict}
        data.update({k: v for k, v in self.provenance.items() if k not in ("format", "versions")})
        if self.training is not None:
            t = self.training
            data.update(model_state=dict(t.model_state), optimizer=t.optimizer, scheduler=t.scheduler,
                        ema=None if t.ema is None else dict(t.ema), epoch=t.epoch, best_metric=t.best_metric,
                        rng=t.rng, split=t.split, interrupted_mid_epoch=t.interrupted_mid_epoch)
        return data


def save_checkpoint(checkpoint: Checkpoint, path: str | Path | None = None) -> Path:
    """Write ``checkpoint`` (plus format and versions) atomically: temp file, fsync, rename."""
    target = Path(path or checkpoint.path)
    with atomic_open(target, "wb") as handle:
        torch.save({"format": CHECKPOINT_FORMAT, "versions": versions(), **checkpoint.payload()}, handle)
    return target


def _read(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # torch's own text here is a page long
        raise CheckpointError(f"{path}: not a readable seg checkpoint (not a torch file, or it holds "
                              "objects other than tensors and plain values, which seg never unpickles)") from None
    except Exception as err:  # corrupt or foreign file: say which and why, in one line
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(f"{path}: not a readable seg checkpoint ({reason})") from None
    if not isinstance(data, dict) or "state_dict" not in data or not isinstance(data.get("config"), dict):
        raise CheckpointError(f"{path}: not a seg checkpoint (no state_dict/config)")
    if data.get("format", 0) > CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {data['format']} is newer than this seg understands")
    return data


def _training_state(data: dict[str, Any]) -> TrainingState | None:
    if not all(key in data for key in _TRAINING_KEYS):
        return None
    return TrainingState(
        model_state=data["model_state"], optimizer=data["optimizer"], scheduler=data["scheduler"],
        epoch=int(data["epoch"]), best_metric=float(data["best_metric"]), rng=data["rng"], ema=data.get("ema"),
        split=data.get("split") or {}, interrupted_mid_epoch=bool(data.get("interrupted_mid_epoch")))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint safely (no arbitrary unpickling).

    Raises:
        CheckpointError: the file is missing, not a checkpoint of ours, or of an unknown format.
    """
    path = Path(path)
    data = _read(path, map_location)
    known = {"state_dict", "config", *_TRAINING_KEYS, "ema", "split", "interrupted_mid_epoch"}
    provenance = {k: v for k, v in data.items() if k not in known}
    return Checkpoint(path, data["config"], data["state_dict"], _training_state(data), provenance)


def resolve_checkpoint(path: str | Path, which: str = "best") -> Path:
    """A run folder or a checkpoint file -> the checkpoint file (``best.pt``, else ``last.pt``)."""
    path = Path(path)
    if path.is_dir():
        for name in (f"{which}.pt", "best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: run folder holds no checkpoint (best.pt / last.pt)")
    return path


def _keys(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def load_weights(model: nn.Module, state: Any, path: str | Path, what: str = "state_dict") -> None:
    """Load ``state`` into ``model`` strictly: every key present, none extra, every shape equal.

    ``strict=False`` would let an empty, partial or foreign state dict through and leave random
    weights behind; this names the file and a few offending keys instead.

    Raises:
        CheckpointError: the state dict does not fit the model built from the checkpoint's config.
    """
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: {what} is not a mapping of parameter names to tensors")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_keys(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_keys(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches ({_keys(shapes)})")
    if problems:
        raise CheckpointError(f"{path}: {what} does not fit the model its config describes: "
                              + "; ".join(problems))
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{path}: {what} holds NaN or Inf weights ({_keys(bad)}): it would predict nonsense")
    model.load_state_dict(state, strict=True)
