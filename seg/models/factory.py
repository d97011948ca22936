"""The model registry and ``create_model(cfg)``.

Every registered builder has the signature
``builder(*, spatial_dims, in_channels, num_classes, size="small", deep_supervision=False,
gate="attention", **params) -> nn.Module`` and returns a module mapping
``[B, in_channels, *S] -> [B, num_classes, *S]`` logits (a list when deep supervision is on
and the module is training). Builders that do not use an option ignore it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

from seg.registry import Registry

if TYPE_CHECKING:
    from seg.config import Config

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def build_model(name: str, *, spatial_dims: int, in_channels: int, num_classes: int, size: str = "small",
                deep_supervision: bool = False, gate: str = "attention", **params: Any) -> nn.Module:
    """Build a registered model by name (see module docstring for the signature)."""
    builder = MODELS.get(name)
    try:
        return builder(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, size=size,
                       deep_supervision=deep_supervision, gate=gate, **params)
    except TypeError as err:
        raise ValueError(f"model {name!r}: bad model.params ({err})") from None


def create_model(cfg: Config) -> nn.Module:
    """Build the network an experiment config describes."""
    m = cfg.model
    return build_model(m.name, spatial_dims=cfg.data.spatial_dims, in_channels=cfg.data.in_channels,
                       num_classes=cfg.out_channels, size=m.size, deep_supervision=m.deep_supervision,
                       gate=m.gate, **m.params)


def is_deep_supervised(model: nn.Module) -> bool:
    """Whether the model returns a list of outputs in training mode."""
    return bool(getattr(model, "deep_supervision", False))


def prepare_export(model: nn.Module) -> nn.Module:
    """Remove training-only outputs and switch to eval mode (any registered model)."""
    if hasattr(model, "prepare_export"):
        return model.prepare_export()
    return model.eval()
