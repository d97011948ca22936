"""``gla_unet``: hybrid encoder, convolutions at fine levels and ViG-style GLA blocks at coarse ones.

Convolutions are cheap and local where the grid is large; global context is added where the
grid is small enough for it to matter and still cheap: GLA blocks scan the whole patch in
linear time (see :class:`seg.layers.gla.VisionGLABlock`), so no windowing is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seg.layers.gla import VisionGLABlock
from seg.models.conv_encoder import StagedEncoder, check_levels, hybrid_layout
from seg.models.unet import unet_encoder

__all__ = ["GLAEncoder", "gla_encoder"]

# Per spatial dims and size: (channels per level, conv levels, GLA blocks per GLA level).
SIZES = {
    2: {"small": ((16, 32, 64, 128, 256), 2, (2, 2, 2)), "base": ((32, 64, 128, 256, 512), 2, (2, 4, 2))},
    3: {"small": ((16, 32, 64, 128), 2, (2, 2)), "base": ((32, 64, 128, 256, 320), 2, (2, 4, 2))},
}


def gla_heads(channels: int, head_width: int = 32) -> int:
    """Heads for a GLA block of ``channels``: about ``channels / head_width``, dividing both the
    value width (``channels``) and the key width (``channels // 2``)."""
    for heads in range(max(1, channels // head_width), 0, -1):
        if channels % heads == 0 and (channels // 2) % heads == 0:
            return heads
    return 1


class GLAEncoder(StagedEncoder):
    """Conv stages at the first ``conv_levels`` levels, then (stride-2 conv + GLA blocks) stages.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        channels: width per level; level ``i`` has reduction ``2**i``.
        conv_levels: leading levels built from conv blocks only (at least 1).
        depths: GLA blocks per remaining level (``len(channels) - conv_levels`` values).
        drop_path: largest stochastic-depth rate, reached linearly over the GLA blocks.
        backend: GLA backend ("auto", "torch", "fla").

    Shape: [B, C, *S] -> list of [B, channels[i], *S / 2**i], highest resolution first.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: Sequence[int],
        conv_levels: int = 2,
        depths: Sequence[int] = (2, 2),
        drop_path: float = 0.0,
        backend: str = "auto",
    ) -> None:
        check_levels(channels, conv_levels, depths, "GLA")
        rates = torch.linspace(0, drop_path, max(1, sum(depths))).tolist()

        def gla_blocks(level: int, width: int) -> list[nn.Module]:
            if level < conv_levels:
                return []
            heads = gla_heads(width)
            return [VisionGLABlock(width, spatial_dims, heads, drop_path=rates.pop(0), backend=backend)  # type: ignore[arg-type]
                    for _ in range(depths[level - conv_levels])]

        super().__init__(spatial_dims, in_channels, channels, gla_blocks)


@unet_encoder("gla_unet", description="ours: U-Net, conv stages then gated linear attention (GLA) blocks")
def gla_encoder(
    *,
    spatial_dims: int,
    in_channels: int,
    size: str = "small",
    channels: Sequence[int] | None = None,
    conv_levels: int | None = None,
    depths: Sequence[int] | None = None,
    drop_path: float = 0.0,
    backend: str = "auto",
) -> nn.Module:
    """The GLA U-Net's encoder (GLAEncoder); build_unet adds UNetDecoder(gate) + heads.

    Args:
        channels, conv_levels, depths: override the chosen ``size``'s preset; when ``channels``
            changes the level count without ``depths``, every GLA level gets 2 blocks.
        drop_path: largest stochastic-depth rate of the GLA blocks.
        backend: GLA backend; "auto" uses fla's kernels on CUDA when installed.
    """
    chans, n_conv, blocks = hybrid_layout("gla_unet", SIZES, spatial_dims, size, channels, conv_levels, depths)
    return GLAEncoder(spatial_dims, in_channels, chans, n_conv, blocks, drop_path=drop_path, backend=backend)
