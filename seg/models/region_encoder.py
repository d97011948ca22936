"""``region_unet``: conv stem, then stages of (shifted-)window attention blocks with a gated output.

Windows keep attention cost linear in the number of voxels; alternating plain and shifted
windows lets information cross window borders (Swin). Sizes that do not divide by the window
are padded inside :class:`seg.layers.region_attention.RegionAttention`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seg.layers.region_attention import RegionAttentionBlock
from seg.models.conv_encoder import StagedEncoder, check_levels, hybrid_layout
from seg.models.unet import unet_encoder

__all__ = ["RegionEncoder", "region_encoder"]

# Per spatial dims and size: (channels per level, conv levels, blocks per attention level, window).
SIZES = {
    2: {
        "small": ((16, 32, 64, 128, 256), 2, (2, 2, 2), 8),
        "base": ((32, 64, 128, 256, 512), 2, (2, 4, 2), 8),
    },
    3: {"small": ((16, 32, 64, 128), 2, (2, 2), 4), "base": ((32, 64, 128, 256, 320), 2, (2, 4, 2), 6)},
}


def attention_heads(channels: int, head_width: int = 32) -> int:
    """About ``channels / head_width`` heads, dividing ``channels``."""
    for heads in range(max(1, channels // head_width), 0, -1):
        if channels % heads == 0:
            return heads
    return 1


class RegionEncoder(StagedEncoder):
    """Conv stages at the first ``conv_levels`` levels, then (stride-2 conv + window blocks) stages.

    Inside an attention stage blocks alternate plain and shifted windows (an odd depth ends on
    a plain one).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        channels: width per level; level ``i`` has reduction ``2**i``.
        conv_levels: leading levels built from conv blocks only (at least 1).
        depths: attention blocks per remaining level (``len(channels) - conv_levels`` values).
        window_size: attention window (shrinks to the grid where the grid is smaller).
        output_gate: sigmoid output gate on every attention output.
        drop_path: largest stochastic-depth rate, reached linearly over the attention blocks.

    Shape: [B, C, *S] -> list of [B, channels[i], *S / 2**i], highest resolution first.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: Sequence[int],
        conv_levels: int = 2,
        depths: Sequence[int] = (2, 2),
        window_size: int | Sequence[int] = 4,
        output_gate: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        check_levels(channels, conv_levels, depths, "attention")
        rates = torch.linspace(0, drop_path, max(1, sum(depths))).tolist()

        def attention_blocks(level: int, width: int) -> list[nn.Module]:
            if level < conv_levels:
                return []
            heads = attention_heads(width)
            return [
                RegionAttentionBlock(
                    width,
                    spatial_dims,
                    heads,
                    window_size,
                    shift=i % 2 == 1,
                    output_gate=output_gate,
                    drop_path=rates.pop(0),
                )
                for i in range(depths[level - conv_levels])
            ]

        super().__init__(spatial_dims, in_channels, channels, attention_blocks)


@unet_encoder("region_unet", description="ours: U-Net, conv stem then gated (shifted-)window attention blocks")
def region_encoder(
    *,
    spatial_dims: int,
    in_channels: int,
    size: str = "small",
    channels: Sequence[int] | None = None,
    conv_levels: int | None = None,
    depths: Sequence[int] | None = None,
    window_size: int | Sequence[int] | None = None,
    output_gate: bool = True,
    drop_path: float = 0.0,
) -> nn.Module:
    """The region-attention U-Net's encoder (RegionEncoder); build_unet adds UNetDecoder(gate) + heads.

    Args:
        channels, conv_levels, depths, window_size: override the chosen ``size``'s preset; when
            ``channels`` changes the level count without ``depths``, every attention level gets 2.
        output_gate: the sigmoid gate on the attention outputs (Qiu et al. 2025).
        drop_path: largest stochastic-depth rate of the attention blocks.
    """
    chans, n_conv, blocks = hybrid_layout("region_unet", SIZES, spatial_dims, size, channels, conv_levels, depths)
    window = window_size if window_size is not None else SIZES[spatial_dims][size][3]
    return RegionEncoder(
        spatial_dims, in_channels, chans, n_conv, blocks, window, output_gate=output_gate, drop_path=drop_path
    )
