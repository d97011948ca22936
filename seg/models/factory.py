"""The model registry and ``create_model(cfg)``.

Every registered builder has the signature
``builder(*, spatial_dims, in_channels, num_classes, size="small", deep_supervision=False,
gate="attention", **params) -> nn.Module`` and returns a module mapping
``[B, in_channels, *S] -> [B, num_classes, *S]`` logits (a list when deep supervision is on
and the module is training). Our U-Nets are one builder over an encoder registry
(``seg.models.unet``); baselines with a fixed design declare it (:data:`FIXED_DESIGN`), and a
config that explicitly asks them for something else is rejected by :func:`check_model_config`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from torch import nn

from seg.errors import ConfigError
from seg.registry import Registry

if TYPE_CHECKING:
    from seg.config import Config

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelInfo:
    """What ``seg models`` says of a model: the spatial dims it builds and one line about it."""

    dims: tuple[int, ...]
    description: str

    @property
    def dims_text(self) -> str:
        """``2D``, ``3D`` or ``2D, 3D``."""
        return ", ".join(f"{d}D" for d in self.dims)


MODEL_INFO: dict[str, ModelInfo] = {}


def register_model(name: str, *, dims: Sequence[int], description: str) -> Callable[[Builder], Builder]:
    """Decorator: register a builder in ``MODELS`` with its dims and one-line description.

    The builders check ``spatial_dims`` against these dims (:func:`check_dims`), so ``seg models``
    says what they accept.
    """

    def deco(builder: Builder) -> Builder:
        MODELS.register(name)(builder)
        MODEL_INFO[name] = ModelInfo(tuple(sorted(dims)), description)
        return builder

    return deco


def check_dims(name: str, spatial_dims: int) -> None:
    """Raises ValueError when model ``name`` does not build ``spatial_dims`` (its registered dims)."""
    info = MODEL_INFO[name]
    if spatial_dims not in info.dims:
        raise ValueError(f"{name} supports {' or '.join(f'{d}D' for d in info.dims)} only, "
                         f"got spatial_dims={spatial_dims}")

# Model name -> the values of ``gate`` / ``deep_supervision`` its design has (baselines only).
FIXED_DESIGN: dict[str, dict[str, Any]] = {}
_HINTS = {"deep_supervision": "it has no deep-supervision heads", "gate": "its skip design is fixed"}


def build_model(name: str, *, spatial_dims: int, in_channels: int, num_classes: int, size: str = "small",
                deep_supervision: bool = False, gate: str = "attention", **params: Any) -> nn.Module:
    """Build a registered model by name (see module docstring for the signature)."""
    builder = MODELS.get(name)
    try:
        return builder(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, size=size,
                       deep_supervision=deep_supervision, gate=gate, **params)
    except TypeError as err:
        raise ConfigError(f"model {name!r}: bad model.params ({err})") from None
    except ValueError as err:  # a builder rejecting its settings: the user's config, not a bug
        raise ConfigError(f"model {name!r}: {err}") from None


def check_model_config(cfg: Config, explicit_only: bool = True) -> None:
    """Reject a model config before any data is read: an unknown ``model.name`` (with a "did you
    mean"), or a ``gate`` / ``deep_supervision`` that a fixed-design baseline would ignore.

    Args:
        explicit_only: check only the options the config sets itself (the schema defaults,
            deep supervision on and attention gates, are for our U-Nets and do not count).

    Raises:
        ConfigError: the message names the key, the value and what to set instead.
    """
    m = cfg.model
    MODELS.get(m.name)
    fixed = FIXED_DESIGN.get(m.name, {})
    for key, allowed in fixed.items():
        value = getattr(m, key)
        if (key in m.model_fields_set or not explicit_only) and value != allowed:
            raise ConfigError(f"model.{key}={value} is not supported by {m.name} ({_HINTS[key]}); "
                              f"remove it or set model.{key}={str(allowed).lower()}")


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
