"""The encoder contract: every registered encoder's outputs match its ``feature_info``, 2D and 3D.

A decoder is sized from ``feature_info`` alone (never from a name), so an encoder that reports other
channels or reductions than it outputs would build a decoder that fails, or worse, silently
misaligns skips. Each output ``i`` must have ``feature_info[i].channels`` channels and a spatial size
of the input divided by ``feature_info[i].reduction``, highest resolution first.
"""

from __future__ import annotations

import pytest
import torch

from seg.models.unet import ENCODERS

from .test_contract import TINY_PARAMS

IN_CHANNELS = 2
SHAPES = {2: (64, 64), 3: (32, 32, 32)}
CASES = [pytest.param(name, dims, id=f"{name}-{dims}d") for name in ENCODERS.names() for dims in (2, 3)]


def _encoder(name: str, dims: int) -> torch.nn.Module:
    torch.manual_seed(0)
    try:
        return ENCODERS.get(name)(spatial_dims=dims, in_channels=IN_CHANNELS, size="small",
                                  **TINY_PARAMS.get(name, {})).eval()
    except ValueError as err:  # a 2D-only encoder (timm) rejects 3D
        pytest.skip(f"rejected: {err}")


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_outputs_match_feature_info(name: str, dims: int) -> None:
    encoder = _encoder(name, dims)
    shape = SHAPES[dims]
    with torch.no_grad():
        features = encoder(torch.randn(1, IN_CHANNELS, *shape))
    info = list(encoder.feature_info)
    assert len(features) == len(info), f"{name}: {len(features)} outputs, feature_info lists {len(info)}"
    reductions = [f.reduction for f in info]
    assert reductions == sorted(reductions), f"{name}: outputs not highest resolution first: {reductions}"
    for index, (feature, expected) in enumerate(zip(features, info, strict=True)):
        assert feature.shape[1] == expected.channels, (
            f"{name} output {index}: {feature.shape[1]} channels, feature_info says {expected.channels}")
        want = tuple(s // expected.reduction for s in shape)
        assert tuple(feature.shape[2:]) == want, (
            f"{name} output {index}: spatial {tuple(feature.shape[2:])}, reduction {expected.reduction} "
            f"of {shape} gives {want}")


def test_every_encoder_is_covered() -> None:
    """The registry is read at collection: a new encoder is tested without editing this file."""
    assert {"ag_unet", "gla_unet", "region_unet", "timm_unet"} <= set(ENCODERS.names())
