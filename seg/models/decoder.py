"""U-Net decoder sized from an encoder's ``feature_info``, with optional attention-gated skips."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seg.layers.attention_gate import AttentionGate
from seg.layers.conv import conv_block, conv_transpose_nd
from seg.models.segmenter import FeatureInfo


class UNetDecoder(nn.Module):
    """Upsample, (gate the skip), concatenate, convolve — from the coarsest feature up.

    Args:
        spatial_dims: 2 or 3.
        feature_info: the encoder's outputs, highest resolution first.
        gate: ``"attention"`` for additive attention gates on the skips, ``"none"`` for plain skips.

    Shape: features (highest resolution first) -> list of decoder maps, highest resolution first,
        with ``out_channels[i] == feature_info[i].channels``.
    """

    def __init__(self, spatial_dims: int, feature_info: Sequence[FeatureInfo], gate: str = "attention") -> None:
        super().__init__()
        if gate not in ("attention", "none"):
            raise ValueError(f"gate must be 'attention' or 'none', got {gate!r}")
        self.spatial_dims = spatial_dims
        info = list(feature_info)
        self.ups = nn.ModuleList()
        self.gates = nn.ModuleList()
        self.blocks = nn.ModuleList()
        up = conv_transpose_nd(spatial_dims)
        for lvl in range(len(info) - 2, -1, -1):
            coarse, skip = info[lvl + 1], info[lvl]
            ratio = coarse.reduction // skip.reduction
            self.ups.append(up(coarse.channels, skip.channels, kernel_size=ratio, stride=ratio))
            self.gates.append(
                AttentionGate(spatial_dims, skip.channels, coarse.channels, stride=ratio)
                if gate == "attention" else nn.Identity()
            )
            self.blocks.append(conv_block(spatial_dims, 2 * skip.channels, skip.channels))
        self.use_gate = gate == "attention"
        self.out_channels = [f.channels for f in info]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        x = features[-1]
        outs = [x]
        for i, lvl in enumerate(range(len(features) - 2, -1, -1)):
            skip = features[lvl]
            g = x
            x = self.ups[i](x)
            if x.shape[2:] != skip.shape[2:]:
                x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
            gated = self.gates[i](skip, g) if self.use_gate else skip
            x = self.blocks[i](torch.cat([x, gated], dim=1))
            outs.append(x)
        return outs[::-1]
