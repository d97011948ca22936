"""Additive attention gate for skip connections (Oktay et al., "Attention U-Net", 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seg.layers.conv import conv_nd


class AttentionGate(nn.Module):
    """Gates skip features with a coefficient map computed from the coarser decoder level.

    alpha = sigmoid(psi(relu(theta(x) + phi(g)))) is computed at the gating signal's resolution
    (theta downsamples the skip by ``stride``), resampled to the skip's resolution and
    multiplies the skip features. Computing at the coarse level is what keeps the gate cheap.

    Args:
        spatial_dims: 2 or 3.
        skip_channels: channels of the skip features x.
        gating_channels: channels of the gating signal g.
        inter_channels: width of the additive attention (default skip_channels // 2, at least 1).
        stride: resolution ratio between x and g.

    Shape:
        x: [B, Cx, *S], g: [B, Cg, *S/stride] -> [B, Cx, *S] (and alpha: [B, 1, *S] if asked).
    """

    def __init__(self, spatial_dims: int, skip_channels: int, gating_channels: int,
                 inter_channels: int | None = None, stride: int = 2) -> None:
        super().__init__()
        conv = conv_nd(spatial_dims)
        inter = inter_channels or max(skip_channels // 2, 1)
        self.theta = conv(skip_channels, inter, kernel_size=stride, stride=stride, bias=False)
        self.phi = conv(gating_channels, inter, kernel_size=1, bias=True)
        self.psi = conv(inter, 1, kernel_size=1, bias=True)
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"

    def forward(self, x: torch.Tensor, g: torch.Tensor, return_attention: bool = False):
        theta_x = self.theta(x)
        phi_g = self.phi(g)
        if phi_g.shape[2:] != theta_x.shape[2:]:  # odd skip sizes: align the gate to theta's grid
            phi_g = F.interpolate(phi_g, size=theta_x.shape[2:], mode=self.mode, align_corners=False)
        alpha = torch.sigmoid(self.psi(F.relu(theta_x + phi_g)))
        alpha = F.interpolate(alpha, size=x.shape[2:], mode=self.mode, align_corners=False)
        out = x * alpha
        return (out, alpha) if return_attention else out
