"""Any timm backbone as a 2D encoder, and ``timm_unet`` built on it.

``timm_unet`` pairs a timm encoder with our attention-gated :class:`UNetDecoder`. The decoder
is sized from ``feature_info`` only — channels and reductions as timm reports them, first
feature already downsampled — which is the point: decoders never look at an encoder's name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seg.models.segmenter import FeatureInfo
from seg.models.unet import unet_encoder


class TimmEncoder(nn.Module):
    """A timm model created with ``features_only=True``, randomly initialised.

    Args:
        name: timm model name (e.g. ``"resnet18"``, ``"convnext_atto"``).
        in_channels: image channels.
        out_indices: which feature stages to return (timm's default: all).

    Shape: [B, C, H, W] -> list of [B, feature_info[i].channels, H / r_i, W / r_i], highest
        resolution first (``r_i = feature_info[i].reduction``, typically 2, 4, ..., 32).
    """

    spatial_dims = 2

    def __init__(self, name: str, in_channels: int, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        import timm

        extra = {"out_indices": tuple(out_indices)} if out_indices is not None else {}
        self.model = timm.create_model(name, features_only=True, pretrained=False, in_chans=in_channels,
                                       **extra)
        info = self.model.feature_info
        self.feature_info = [FeatureInfo(int(c), int(r)) for c, r in zip(info.channels(), info.reduction())]
        reductions = [f.reduction for f in self.feature_info]
        if reductions != sorted(reductions) or len(set(reductions)) != len(reductions):
            # The U-Net decoder upsamples between consecutive levels; equal or shrinking
            # reductions (e.g. ViT-style single-scale backbones) have nothing to upsample.
            raise ValueError(f"timm encoder {name!r} must return strictly coarser features, "
                             f"got reductions {reductions}")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Shape: [B, C, H, W] -> features, highest resolution first."""
        return list(self.model(x))


SIZES = {"small": "resnet10t", "base": "resnet50"}


@unet_encoder("timm_unet", dims=(2,), description="ours: U-Net decoder on any timm backbone (random init)")
def timm_encoder(*, spatial_dims: int, in_channels: int, size: str = "small", encoder_name: str | None = None,
                 out_indices: Sequence[int] | None = None) -> nn.Module:
    """A timm encoder (2D only: ``unet_encoder`` checks ``spatial_dims``); build_unet adds our decoder.

    Args:
        encoder_name: timm model name (overrides ``size``: small ``resnet10t``, base ``resnet50``).
        out_indices: timm feature stages to use.
    """
    if encoder_name is None:
        if size not in SIZES:
            raise ValueError(f"timm_unet: unknown size {size!r}; valid: {', '.join(SIZES)}")
        encoder_name = SIZES[size]
    return TimmEncoder(encoder_name, in_channels, out_indices)
