"""``ag_unet``: convolutional U-Net with attention-gated skip connections (ours): the conv encoder."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from seg.models.conv_encoder import ConvEncoder
from seg.models.unet import unet_encoder

SIZES = {
    2: {"small": (16, 32, 64, 128, 256), "base": (32, 64, 128, 256, 512, 512)},
    3: {"small": (16, 32, 64, 128), "base": (32, 64, 128, 256, 320)},
}


@unet_encoder("ag_unet", description="ours: convolutional U-Net with attention-gated skip connections")
def conv_encoder(*, spatial_dims: int, in_channels: int, size: str = "small",
                 channels: Sequence[int] | None = None) -> nn.Module:
    """The attention U-Net's encoder (ConvEncoder); build_unet adds UNetDecoder(gate) + heads.

    Args:
        channels: overrides the width per stage of the chosen ``size``.
    """
    if spatial_dims not in SIZES or size not in SIZES[spatial_dims]:
        raise ValueError(f"ag_unet: unknown spatial_dims/size {spatial_dims}/{size!r}; sizes: small, base")
    chans = tuple(channels) if channels else SIZES[spatial_dims][size]
    return ConvEncoder(spatial_dims, in_channels, chans)
