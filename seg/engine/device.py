"""Device names from the command line or the config -> a ``torch.device`` that exists here.

``auto`` picks CUDA when there is a GPU; ``gpu`` / ``gpu:N`` are aliases of ``cuda`` / ``cuda:N``;
CUDA asked for on a machine without it falls back to the CPU with a warning (as ``seg-run`` does
for its providers), so a config written on a GPU box still runs on a laptop.
"""

from __future__ import annotations

import logging
import re

import torch

from seg.errors import ConfigError

log = logging.getLogger(__name__)

DEVICE_HELP = "auto, cpu, cuda, cuda:N (gpu and gpu:N are aliases)"
_PATTERN = re.compile(r"^(auto|cpu|cuda|gpu|mps)(?::(\d+))?$")


def resolve_device(name: str) -> torch.device:
    """The device ``name`` means on this machine.

    Raises:
        ConfigError: ``name`` is not a device name, or names a GPU index this machine lacks.
    """
    match = _PATTERN.match(str(name).strip().lower())
    if not match or (match.group(2) is not None and match.group(1) in ("auto", "cpu", "mps")):
        raise ConfigError(f"unknown device {name!r}; valid: {DEVICE_HELP}")
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "gpu":
        kind = "cuda"
    if kind == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        log.warning("device %r: MPS is not available here; running on the CPU", name)
        return torch.device("cpu")
    if kind != "cuda":
        return torch.device(kind)
    if not torch.cuda.is_available():
        log.warning("device %r: CUDA is not available on this machine; running on the CPU", name)
        return torch.device("cpu")
    if index is not None and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                          f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return torch.device("cuda", int(index)) if index is not None else torch.device("cuda")
