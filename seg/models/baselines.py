"""Published baselines (MONAI, segmentation_models_pytorch) behind our builder signature.

Every builder returns plain logits ``[B, num_classes, *S]`` in train and eval mode and accepts
any input size: the networks' own divisibility constraints are met by zero-padding at the end
of each axis inside :class:`PadCrop` and cropping the logits back (as :class:`Segmenter` does
for our models). Options of the common signature that a network has no use for (deep
supervision, attention gates) are fixed by each design: ``FIXED_DESIGN`` records them, and a
config that sets them otherwise is rejected; ``params`` override the size presets.
No builder downloads weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seg.models.ag_unet import SIZES as AG_UNET_SIZES
from seg.models.factory import FIXED_DESIGN, check_dims, register_model


class PadCrop(nn.Module):
    """Pads the input to a multiple of ``multiple`` per spatial axis, crops the output back.

    Args:
        net: the wrapped network, ``[B, C, *P] -> [B, K, *P]`` for padded sizes ``P``.
        multiple: every spatial size is padded up to a multiple of this.
        min_coarse_voxels: the padded grid, divided by ``multiple``, must hold at least this
            many voxels (the first axis grows by ``multiple`` until it does).

    Shape: [B, C, *S] -> [B, K, *S]
    """

    # Baselines never return auxiliary outputs; the training loop reads this flag.
    deep_supervision = False

    def __init__(self, net: nn.Module, multiple: int, min_coarse_voxels: int = 1) -> None:
        super().__init__()
        self.net = net
        self.multiple = multiple
        self.min_coarse_voxels = min_coarse_voxels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Python ints: the TorchScript exporter freezes them (the deploy patch size is fixed).
        size = [int(s) for s in x.shape[2:]]
        m = self.multiple
        target = [int(math.ceil(s / m)) * m for s in size]
        while math.prod(t // m for t in target) < self.min_coarse_voxels:
            target[0] += m
        pad: list[int] = []
        for s, t in zip(reversed(size), reversed(target)):
            pad += [0, t - s]
        if any(pad):
            x = F.pad(x, pad)
        out = self.net(x)
        return out[(slice(None), slice(None), *[slice(0, s) for s in size])]

    def prepare_export(self) -> PadCrop:
        """Switch to eval mode (there are no training-only outputs to drop)."""
        return self.eval()


def _check_size(name: str, size: str, presets: dict[str, Any]) -> Any:
    if size not in presets:
        raise ValueError(f"{name}: unknown size {size!r}; valid: {', '.join(presets)}")
    return presets[size]


# Gated skips are part of AttentionUnet; none of the baselines has deep-supervision heads.
FIXED_DESIGN.update({name: {"gate": "none", "deep_supervision": False}
                     for name in ("monai_unet", "monai_segresnet", "monai_swin_unetr", "smp_unet")})
FIXED_DESIGN["monai_attention_unet"] = {"gate": "attention", "deep_supervision": False}

# The MONAI U-Nets take ag_unet's widths per level, so peer comparisons match capacity.
_UNET_CHANNELS = AG_UNET_SIZES


@register_model("monai_attention_unet", dims=(2, 3),
                description="baseline: MONAI AttentionUnet (Oktay et al. 2018)")
def build_monai_attention_unet(*, spatial_dims: int, in_channels: int, num_classes: int, size: str = "small",
                               deep_supervision: bool = False, gate: str = "attention",
                               channels: Sequence[int] | None = None, **params: Any) -> nn.Module:
    """MONAI's ``AttentionUnet`` (Oktay et al. 2018), stride 2 per level.

    Args:
        channels: width per level (overrides ``size``; the presets are ag_unet's).
        params: passed to ``AttentionUnet`` (e.g. ``dropout``).
    """
    from monai.networks.nets import AttentionUnet

    check_dims("monai_attention_unet", spatial_dims)
    presets = _UNET_CHANNELS[spatial_dims]
    chans = tuple(channels) if channels else _check_size("monai_attention_unet", size, presets)
    strides = (2,) * (len(chans) - 1)
    net = AttentionUnet(spatial_dims, in_channels, num_classes, channels=chans, strides=strides, **params)
    return PadCrop(net, 2 ** len(strides))


@register_model("monai_unet", dims=(2, 3),
                description="baseline: MONAI residual UNet (Kerfoot et al. 2018)")
def build_monai_unet(*, spatial_dims: int, in_channels: int, num_classes: int, size: str = "small",
                     deep_supervision: bool = False, gate: str = "attention",
                     channels: Sequence[int] | None = None, num_res_units: int = 2,
                     **params: Any) -> nn.Module:
    """MONAI's ``UNet`` with residual units (Kerfoot et al. 2018), stride 2 per level.

    Args:
        channels: width per level (overrides ``size``; the presets are ag_unet's).
        num_res_units: residual units per block.
        params: passed to ``UNet`` (e.g. ``norm``, ``dropout``).
    """
    from monai.networks.nets import UNet

    check_dims("monai_unet", spatial_dims)
    chans = tuple(channels) if channels else _check_size("monai_unet", size, _UNET_CHANNELS[spatial_dims])
    strides = (2,) * (len(chans) - 1)
    net = UNet(spatial_dims, in_channels, num_classes, channels=chans, strides=strides,
               num_res_units=num_res_units, **params)
    return PadCrop(net, 2 ** len(strides))


@register_model("monai_segresnet", dims=(2, 3),
                description="baseline: MONAI SegResNet without the VAE branch (Myronenko 2018)")
def build_monai_segresnet(*, spatial_dims: int, in_channels: int, num_classes: int, size: str = "small",
                          deep_supervision: bool = False, gate: str = "attention",
                          init_filters: int | None = None, blocks_down: Sequence[int] = (1, 2, 2, 4),
                          **params: Any) -> nn.Module:
    """MONAI's ``SegResNet`` (Myronenko 2018) without the VAE branch.

    Args:
        init_filters: width of the first level (small 8, base 32); a multiple of 8 (group norm).
        blocks_down: residual blocks per encoder level; one level fewer is decoded.
        params: passed to ``SegResNet`` (e.g. ``blocks_up``, ``dropout_prob``).
    """
    from monai.networks.nets import SegResNet

    check_dims("monai_segresnet", spatial_dims)
    width = init_filters or _check_size("monai_segresnet", size, {"small": 8, "base": 32})
    blocks_up = params.pop("blocks_up", (1,) * (len(blocks_down) - 1))
    net = SegResNet(spatial_dims=spatial_dims, init_filters=width, in_channels=in_channels,
                    out_channels=num_classes, blocks_down=tuple(blocks_down), blocks_up=tuple(blocks_up),
                    **params)
    return PadCrop(net, 2 ** (len(blocks_down) - 1))


@register_model("monai_swin_unetr", dims=(2, 3),
                description="baseline: MONAI SwinUNETR v1, no pretrained weights (needs einops)")
def build_monai_swin_unetr(*, spatial_dims: int, in_channels: int, num_classes: int, size: str = "small",
                           deep_supervision: bool = False, gate: str = "attention",
                           feature_size: int | None = None, patch_size: int = 2, **params: Any) -> nn.Module:
    """MONAI's ``SwinUNETR`` (Hatamizadeh et al. 2022), v1, no pretrained weights.

    SwinUNETR needs every spatial size divisible by ``patch_size ** 5`` (32 by default);
    the wrapper pads to that and crops back. A 32^3 input would leave a one-voxel
    bottleneck, which its instance norm rejects, so the first axis is then padded to 64.

    Args:
        feature_size: embedding width (a multiple of 12; small 12, base 48 as in the paper).
        patch_size: patch-embedding stride.
        params: passed to ``SwinUNETR`` (e.g. ``depths``, ``num_heads``, ``window_size``).
    """
    import importlib.util

    from monai.networks.nets import SwinUNETR

    check_dims("monai_swin_unetr", spatial_dims)
    if importlib.util.find_spec("einops") is None:
        # MONAI imports einops lazily and would only fail at the first forward, deep inside.
        raise ImportError("monai_swin_unetr needs the 'einops' package (pip install einops)")
    width = feature_size or _check_size("monai_swin_unetr", size, {"small": 12, "base": 48})
    net = SwinUNETR(in_channels=in_channels, out_channels=num_classes, feature_size=width,
                    patch_size=patch_size, spatial_dims=spatial_dims, **params)
    return PadCrop(net, patch_size**5, min_coarse_voxels=2)


@register_model("smp_unet", dims=(2,),
                description="baseline: segmentation_models_pytorch Unet, random-init encoder")
def build_smp_unet(*, spatial_dims: int, in_channels: int, num_classes: int, size: str = "small",
                   deep_supervision: bool = False, gate: str = "attention", encoder_name: str = "resnet18",
                   encoder_depth: int = 5, decoder_channels: Sequence[int] | None = None,
                   **params: Any) -> nn.Module:
    """segmentation_models_pytorch ``Unet`` (2D only) with randomly initialised encoder.

    Args:
        encoder_name: an smp encoder (``"resnet18"``) or any timm encoder as ``"tu-<name>"``.
        encoder_depth: encoder stages; inputs are padded to a multiple of ``2 ** encoder_depth``.
        decoder_channels: decoder width per stage, ``encoder_depth`` values (overrides ``size``).
        params: passed to ``smp.Unet`` (e.g. ``decoder_attention_type="scse"``).
    """
    check_dims("smp_unet", spatial_dims)
    import segmentation_models_pytorch as smp

    presets = {"small": (128, 64, 32, 16, 8), "base": (256, 128, 64, 32, 16)}
    if decoder_channels is None:
        decoder_channels = _check_size("smp_unet", size, presets)[:encoder_depth]
    params.setdefault("encoder_weights", None)
    if params["encoder_weights"] is not None:
        raise ValueError("smp_unet: encoder_weights must be None (no downloads at run time)")
    if params.get("aux_params") is not None:  # smp would return (mask, label): not plain logits
        raise ValueError("smp_unet: aux_params is not supported (the harness expects logits only)")
    net = smp.Unet(encoder_name=encoder_name, encoder_depth=encoder_depth,
                   decoder_channels=tuple(decoder_channels), in_channels=in_channels, classes=num_classes,
                   **params)
    return PadCrop(net, 2**encoder_depth)
