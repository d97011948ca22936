"""Plain convolutional U-Net encoder (nnU-Net style stages)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seg.layers.conv import conv_block
from seg.models.segmenter import FeatureInfo


class ConvEncoder(nn.Module):
    """Stages of two conv-norm-act layers; every stage after the first halves the resolution.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        channels: width per stage, e.g. (16, 32, 64, 128).

    Shape: [B, C, *S] -> list of [B, channels[i], *S / 2**i]
    """

    def __init__(self, spatial_dims: int, in_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        stages = []
        prev = in_channels
        for i, c in enumerate(channels):
            stages.append(conv_block(spatial_dims, prev, c, stride=1 if i == 0 else 2))
            prev = c
        self.stages = nn.ModuleList(stages)
        self.feature_info = [FeatureInfo(c, 2**i) for i, c in enumerate(channels)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats
