"""The encoder-decoder contract: encoders report ``feature_info``; decoders are sized from it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seg.layers.conv import conv_nd


@dataclass(frozen=True)
class FeatureInfo:
    """One encoder output: its channels and its downsampling factor w.r.t. the input."""

    channels: int
    reduction: int


class Segmenter(nn.Module):
    """Encoder + decoder + 1x1 heads, with optional deep supervision.

    The input is padded to a multiple of the encoder's total reduction (so every model accepts
    odd sizes) and the logits are cropped back. With ``deep_supervision`` and in training mode the
    forward returns ``[full-res logits, coarser logits...]``; in eval mode always one tensor.

    Args:
        encoder: module with ``spatial_dims``, ``feature_info`` and ``forward(x) -> list[Tensor]``.
        decoder: module with ``out_channels: list[int]`` and ``forward(features) -> list[Tensor]``
            (highest resolution first).
        num_classes: output channels (background included).
        deep_supervision: number of extra heads is ``min(3, levels - 1)`` when True.

    Shape: [B, C_in, *S] -> [B, num_classes, *S]
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, num_classes: int,
                 deep_supervision: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.spatial_dims = encoder.spatial_dims
        self.num_classes = num_classes
        conv = conv_nd(self.spatial_dims)
        chans = decoder.out_channels
        self.head = conv(chans[0], num_classes, kernel_size=1)
        n_aux = min(3, len(chans) - 1) if deep_supervision else 0
        self.aux_heads = nn.ModuleList(conv(c, num_classes, kernel_size=1) for c in chans[1 : 1 + n_aux])
        self.deep_supervision = deep_supervision
        self.size_multiple = max(f.reduction for f in encoder.feature_info)
        self.out_reduction = encoder.feature_info[0].reduction

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        size = list(x.shape[2:])
        m = self.size_multiple
        target = [int(math.ceil(s / m) * m) for s in size]
        pad: list[int] = []
        for s, t in zip(reversed(size), reversed(target)):
            pad += [0, t - s]
        if any(pad):
            x = F.pad(x, pad)
        return x, size

    def forward(self, x: torch.Tensor):
        x, size = self._pad(x)
        feats = self.encoder(x)
        dec = self.decoder(feats)
        logits = self._to_input(self.head(dec[0]), size)
        if not (self.training and self.deep_supervision):
            return logits
        aux = []
        for head, d in zip(self.aux_heads, dec[1:]):
            out = head(d)
            # crop the coarse map to the fraction of it that covers the unpadded input
            keep = [int(math.ceil(s * out.shape[2 + i] / x.shape[2 + i])) for i, s in enumerate(size)]
            aux.append(out[(slice(None), slice(None), *[slice(0, k) for k in keep])])
        return [logits, *aux]

    def _to_input(self, logits: torch.Tensor, size: list[int]) -> torch.Tensor:
        if self.out_reduction > 1:  # encoders whose first feature is already downsampled (timm)
            mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
            logits = F.interpolate(logits, scale_factor=self.out_reduction, mode=mode, align_corners=False)
        return logits[(slice(None), slice(None), *[slice(0, s) for s in size])]

    def prepare_export(self) -> Segmenter:
        """Drop deep-supervision heads and switch to eval: the deploy graph has one output."""
        self.deep_supervision = False
        self.aux_heads = nn.ModuleList()
        return self.eval()
