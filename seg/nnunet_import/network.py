"""The network of an nnU-Net result folder, rebuilt from ``plans.json`` and loaded without unpickling.

- Only architecture classes that ``dynamic-network-architectures`` ships are built (the plans name
  a dotted class path; nothing else is ever imported), and their ``_kw_requires_import`` arguments
  (convolution, normalisation, dropout, non-linearity) are looked up in a fixed table of torch
  classes.
- Checkpoints load with ``torch.load(weights_only=True)`` and an explicit allowlist of the non-tensor
  types real nnU-Net checkpoints carry (numpy scalars and dtypes in the training log); anything else
  is refused (nnU-Net itself unpickles its checkpoints fully).
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seg.nnunet_import.folder import NnunetImportError

ARCHITECTURES = {
    "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
    "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet",
}
TORCH_CLASSES: dict[str, type] = {
    f"{cls.__module__}.{cls.__name__}": cls
    for cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
                nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.Dropout, nn.Dropout1d,
                nn.Dropout2d, nn.Dropout3d, nn.LeakyReLU, nn.ReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU)
}
TORCH_CLASSES.update({f"torch.nn.{cls.__name__}": cls for cls in TORCH_CLASSES.values()})


def _numpy_allowlist() -> list[Any]:
    """The numpy globals of nnU-Net's checkpoints (its training log holds numpy floats)."""
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    allowed: list[Any] = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType"):
        if hasattr(np, "dtypes") and hasattr(np.dtypes, name):
            allowed.append(getattr(np.dtypes, name))
    return allowed


def load_checkpoint(path: Path) -> dict[str, Any]:
    """An nnU-Net checkpoint as plain data, without unpickling anything beyond the allowlist.

    Raises:
        NnunetImportError: unreadable, not a checkpoint, or needing a type outside the allowlist.
    """
    try:
        with torch.serialization.safe_globals(_numpy_allowlist()):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        needed = str(exc).split("Unsupported global: GLOBAL ")[-1].split(" ")[0] if "GLOBAL" in str(exc) else ""
        raise NnunetImportError(f"{path}: needs unpickling{f' {needed}' if needed else ''}, which is refused "
                                "(only tensors, plain data and numpy scalars are loaded)") from None
    except Exception as exc:
        raise NnunetImportError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("network_weights"), dict):
        raise NnunetImportError(f"{path}: not an nnU-Net checkpoint (no 'network_weights')")
    return data


def _architecture(configuration: dict[str, Any], where: Path) -> tuple[type, dict[str, Any]]:
    """The class and keyword arguments ``plans.json`` names, through the allowlists."""
    arch = configuration.get("architecture")
    if not isinstance(arch, dict) or not isinstance(arch.get("arch_kwargs"), dict):
        raise NnunetImportError(f"{where}: no 'architecture' in the configuration (plans from nnU-Net "
                                "before 2.3 are not supported; re-plan with nnUNetv2_plan_experiment)")
    name = arch.get("network_class_name")
    if name not in ARCHITECTURES:
        raise NnunetImportError(f"{where}: unknown architecture {name!r} (supported: "
                                f"{', '.join(sorted(ARCHITECTURES))})")
    module, _, cls = name.rpartition(".")
    try:
        network_class = getattr(importlib.import_module(module), cls)
    except ImportError:
        raise NnunetImportError(f"{where}: {name} needs the nnunet extra: pip install 'seg[nnunet]'") from None
    kwargs = dict(arch["arch_kwargs"])
    for key in arch.get("_kw_requires_import", []):
        value = kwargs.get(key)
        if value is None:
            continue
        if value not in TORCH_CLASSES:
            raise NnunetImportError(f"{where}: architecture argument {key}={value!r} is not an allowed torch "
                                    "layer class")
        kwargs[key] = TORCH_CLASSES[value]
    return network_class, kwargs


def build_network(configuration: dict[str, Any], in_channels: int, out_channels: int, where: Path) -> nn.Module:
    """The plans' network, no deep supervision, eval mode (weights not loaded yet)."""
    network_class, kwargs = _architecture(configuration, where)
    kwargs["deep_supervision"] = False
    try:
        network = network_class(input_channels=in_channels, num_classes=out_channels, **kwargs)
    except Exception as exc:
        raise NnunetImportError(f"{where}: cannot build {network_class.__name__} from the plans "
                                f"({type(exc).__name__}: {exc})") from None
    return network.eval()


def load_weights(network: nn.Module, weights: dict[str, torch.Tensor], path: Path) -> nn.Module:
    """Load a fold's weights strictly (a mismatch names the checkpoint)."""
    try:
        network.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise NnunetImportError(f"{path}: its weights do not fit the network plans.json describes "
                                f"({first})") from None
    return network
