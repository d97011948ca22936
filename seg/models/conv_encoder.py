"""Plain convolutional U-Net encoder (nnU-Net style stages)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from seg.layers.conv import conv_block
from seg.models.segmenter import FeatureInfo


class StagedEncoder(nn.Module):
    """Base of our encoders: one stage per level, a conv block (stride 2 after the first level)
    followed by the blocks ``level_blocks(level, width)`` returns (none for a plain conv stage).

    Shape: [B, C, *S] -> list of [B, channels[i], *S / 2**i], highest resolution first.
    """

    def __init__(self, spatial_dims: int, in_channels: int, channels: Sequence[int],
                 level_blocks: Callable[[int, int], list[nn.Module]] | None = None) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        stages: list[nn.Module] = []
        prev = in_channels
        for level, width in enumerate(channels):
            conv = conv_block(spatial_dims, prev, width, stride=1 if level == 0 else 2)
            blocks = level_blocks(level, width) if level_blocks else []
            stages.append(nn.Sequential(conv, *blocks) if blocks else conv)
            prev = width
        self.stages = nn.ModuleList(stages)
        self.feature_info = [FeatureInfo(c, 2**i) for i, c in enumerate(channels)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def check_levels(channels: Sequence[int], conv_levels: int, depths: Sequence[int], kind: str) -> None:
    """Hybrid encoders: 1 <= conv_levels <= levels, and one depth per ``kind`` level."""
    if not 1 <= conv_levels <= len(channels) or len(depths) != len(channels) - conv_levels:
        raise ValueError(
            f"need 1 <= conv_levels <= {len(channels)} and one depth per {kind} level; "
            f"got conv_levels={conv_levels}, depths={tuple(depths)} for channels={tuple(channels)}"
        )


def hybrid_layout(model: str, sizes: dict, spatial_dims: int, size: str, channels: Sequence[int] | None,
                  conv_levels: int | None, depths: Sequence[int] | None) -> tuple[tuple[int, ...], int, tuple[int, ...]]:
    """Channels, conv levels and blocks per block level of a hybrid encoder: the user's values over
    the ``sizes[spatial_dims][size]`` preset (whose first three entries are those three).

    When ``channels`` changes the level count and ``depths`` is not given, every block level gets 2.

    Raises:
        ValueError: unknown ``spatial_dims`` or ``size``.
    """
    if spatial_dims not in sizes or size not in sizes[spatial_dims]:
        raise ValueError(f"{model}: unknown spatial_dims/size {spatial_dims}/{size!r}; sizes: small, base")
    preset_channels, preset_conv, preset_depths = sizes[spatial_dims][size][:3]
    chans = tuple(channels) if channels else tuple(preset_channels)
    n_conv = conv_levels if conv_levels is not None else min(preset_conv, len(chans))
    n_blocks = len(chans) - n_conv
    blocks = tuple(depths) if depths else (tuple(preset_depths) if len(preset_depths) == n_blocks else (2,) * n_blocks)
    return chans, n_conv, blocks


class ConvEncoder(StagedEncoder):
    """Stages of two conv-norm-act layers; every stage after the first halves the resolution.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        channels: width per stage, e.g. (16, 32, 64, 128).

    Shape: [B, C, *S] -> list of [B, channels[i], *S / 2**i]
    """

    def __init__(self, spatial_dims: int, in_channels: int, channels: Sequence[int]) -> None:
        super().__init__(spatial_dims, in_channels, channels)
