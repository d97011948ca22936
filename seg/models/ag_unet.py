"""``ag_unet``: convolutional U-Net with attention-gated skip connections (ours)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from seg.models.conv_encoder import ConvEncoder
from seg.models.decoder import UNetDecoder
from seg.models.factory import MODELS
from seg.models.segmenter import Segmenter

SIZES = {
    2: {"small": (16, 32, 64, 128, 256), "base": (32, 64, 128, 256, 512, 512)},
    3: {"small": (16, 32, 64, 128), "base": (32, 64, 128, 256, 320)},
}


@MODELS.register("ag_unet")
def build_ag_unet(*, spatial_dims: int, in_channels: int, num_classes: int, size: str = "small",
                  deep_supervision: bool = False, gate: str = "attention",
                  channels: Sequence[int] | None = None) -> nn.Module:
    """Attention U-Net: ConvEncoder + UNetDecoder(gate) + heads.

    Args:
        channels: overrides the width per stage of the chosen ``size``.
    """
    chans = tuple(channels) if channels else SIZES[spatial_dims][size]
    encoder = ConvEncoder(spatial_dims, in_channels, chans)
    decoder = UNetDecoder(spatial_dims, encoder.feature_info, gate=gate)
    return Segmenter(encoder, decoder, num_classes, deep_supervision=deep_supervision)
