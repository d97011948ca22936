"""Self-describing checkpoints: one file with weights, resolved config, label map, versions,
epoch, optimiser/scheduler/EMA state and RNG state. Written atomically, read with
``torch.load(weights_only=True)`` (plain tensors, numbers, strings, lists and dicts only).
"""

from __future__ import annotations

import os
import pickle
import platform
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import seg
from seg.errors import CheckpointError

CHECKPOINT_FORMAT = 1


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


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus format and versions) atomically: temp file, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": CHECKPOINT_FORMAT, "versions": versions(), **payload}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        torch.save(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (no arbitrary unpickling).

    Raises:
        CheckpointError: the file is missing, not a checkpoint of ours, or of an unknown format.
    """
    path = Path(path)
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
    if not isinstance(data, dict) or "state_dict" not in data or "config" not in data:
        raise CheckpointError(f"{path}: not a seg checkpoint (no state_dict/config)")
    if data.get("format", 0) > CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {data['format']} is newer than this seg understands")
    return data


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
    model.load_state_dict(state, strict=True)
