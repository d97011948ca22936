"""Convolutional building blocks shared by encoders and decoders (2D and 3D)."""

from __future__ import annotations

from torch import nn

# nnU-Net's defaults: instance norm with affine, leaky ReLU 0.01. MONAI's blocks implement them.
NORM = ("instance", {"affine": True})
ACT = ("leakyrelu", {"inplace": True, "negative_slope": 0.01})


def conv_block(spatial_dims: int, in_channels: int, out_channels: int, stride: int = 1) -> nn.Module:
    """Two conv-norm-act layers; the first one may downsample.

    Shape: [B, in_channels, *S] -> [B, out_channels, *ceil(S / stride)]
    """
    from monai.networks.blocks import UnetBasicBlock

    return UnetBasicBlock(spatial_dims, in_channels, out_channels, kernel_size=3, stride=stride,
                          norm_name=NORM, act_name=ACT)


def conv_nd(spatial_dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]


def conv_transpose_nd(spatial_dims: int) -> type[nn.Module]:
    """``nn.ConvTranspose2d`` or ``nn.ConvTranspose3d``."""
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[spatial_dims]
