"""One U-Net builder over an encoder registry: ``build_unet(encoder=...)``.

Our models differ only in their encoder; the decoder (attention-gated skips, sized from the
encoder's ``feature_info``) and the heads (:class:`Segmenter`) are shared. An encoder registers
a factory ``(*, spatial_dims, in_channels, size, **params) -> encoder`` with :func:`unet_encoder`,
which also registers the model of the same name (``MODELS``) as ``build_unet(encoder=name)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from seg.models.decoder import UNetDecoder
from seg.models.factory import check_dims, register_model
from seg.models.segmenter import Segmenter
from seg.registry import Registry

__all__ = ["ENCODERS", "build_unet", "unet_encoder"]

EncoderFactory = Callable[..., nn.Module]
ENCODERS: Registry[EncoderFactory] = Registry("encoder")


def build_unet(*, encoder: str, spatial_dims: int, in_channels: int, num_classes: int, size: str = "small",
               deep_supervision: bool = False, gate: str = "attention", **params: Any) -> nn.Module:
    """A U-Net: the registered ``encoder`` + :class:`UNetDecoder` (``gate``) + heads.

    Args:
        encoder: a name registered in ``ENCODERS`` (``ag_unet``, ``gla_unet``, ...).
        params: the encoder's own settings (e.g. ``channels``, ``depths``), over its ``size`` preset.

    Shape: [B, in_channels, *S] -> [B, num_classes, *S] (a list in training with deep supervision).
    """
    enc = ENCODERS.get(encoder)(spatial_dims=spatial_dims, in_channels=in_channels, size=size, **params)
    decoder = UNetDecoder(enc.spatial_dims, enc.feature_info, gate=gate)
    return Segmenter(enc, decoder, num_classes, deep_supervision=deep_supervision)


def unet_encoder(name: str, *, dims: Sequence[int] = (2, 3),
                 description: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Decorator: register an encoder factory and the model ``name`` = ``build_unet(encoder=name)``.

    Args:
        dims: the spatial dims the encoder builds (checked before the factory runs).
        description: one line for ``seg models``.
    """

    def deco(factory: EncoderFactory) -> EncoderFactory:
        @functools.wraps(factory)
        def checked(*, spatial_dims: int, **kwargs: Any) -> nn.Module:
            check_dims(name, spatial_dims)
            return factory(spatial_dims=spatial_dims, **kwargs)

        ENCODERS.register(name)(checked)
        builder = functools.partial(build_unet, encoder=name)
        builder.__name__ = f"build_{name}"  # type: ignore[attr-defined]
        builder.__doc__ = f"U-Net with the {name!r} encoder.\n\n{factory.__doc__ or ''}"
        register_model(name, dims=dims, description=description)(builder)
        return factory

    return deco
