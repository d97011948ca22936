"""gla_unet and region_unet: presets, odd sizes, deep supervision, gradients, state dicts, ONNX."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seg.models import MODELS, build_model
from seg.models.gla_encoder import GLAEncoder, gla_heads
from seg.models.region_encoder import RegionEncoder
from tests.layers.helpers import assert_all_params_get_grad, onnx_max_diff

NAMES = ["gla_unet", "region_unet"]
# Odd sizes: Segmenter pads to the encoder's reduction, the attention level then pads to its window.
SHAPES = {2: (2, 1, 21, 18), 3: (1, 1, 13, 10, 9)}


def _tiny(name: str, spatial_dims: int, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    extra = {"window_size": 3 if spatial_dims == 3 else 4} if name == "region_unet" else {}
    return build_model(
        name, spatial_dims=spatial_dims, in_channels=1, num_classes=3, channels=(8, 16, 32), **extra, **kwargs
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("size", ["small", "base"])
def test_presets_build(name: str, spatial_dims: int, size: str) -> None:
    model = build_model(name, spatial_dims=spatial_dims, in_channels=2, num_classes=4, size=size)
    encoder = model.encoder
    assert isinstance(encoder, GLAEncoder if name == "gla_unet" else RegionEncoder)
    assert [f.reduction for f in encoder.feature_info] == [2**i for i in range(len(encoder.feature_info))]
    # The coarse levels hold attention blocks, the fine ones do not.
    attn = [any(m is not s and hasattr(m, "mlp") for m in s.modules()) for s in encoder.stages]
    assert attn[:2] == [False, False] and all(attn[2:])


def test_registered_and_bad_size() -> None:
    assert set(NAMES) <= set(MODELS.names())
    with pytest.raises(ValueError, match="size"):
        build_model("gla_unet", spatial_dims=3, in_channels=1, num_classes=2, size="huge")
    with pytest.raises(ValueError, match="depth"):
        build_model(
            "region_unet", spatial_dims=2, in_channels=1, num_classes=2, channels=(8, 16, 32), depths=(1, 1)
        )
    assert gla_heads(320) == 10 and gla_heads(100) == 2 and gla_heads(16) == 1


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_odd_sizes_and_gradients(name: str, spatial_dims: int) -> None:
    model = _tiny(name, spatial_dims).train()
    shape = SHAPES[spatial_dims]
    logits = model(torch.randn(shape))
    assert logits.shape == (shape[0], 3, *shape[2:])
    assert_all_params_get_grad(model, logits.square().mean())


@pytest.mark.parametrize("name", NAMES)
def test_deep_supervision_outputs(name: str) -> None:
    model = _tiny(name, 2, deep_supervision=True).train()
    outs = model(torch.randn(SHAPES[2]))
    assert isinstance(outs, list) and len(outs) == 3
    assert outs[0].shape == (2, 3, 21, 18)
    assert all(o.shape[:2] == (2, 3) for o in outs[1:])
    assert model.eval()(torch.randn(SHAPES[2])).shape == (2, 3, 21, 18)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name: str) -> None:
    model, other = _tiny(name, 3).eval(), _tiny(name, 3).eval()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1)
    other.load_state_dict(model.state_dict())
    x = torch.randn(SHAPES[3])
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_eval_onnx_parity(name: str, spatial_dims: int, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model = _tiny(name, spatial_dims, deep_supervision=True)
    model.prepare_export()
    shape = (1, *SHAPES[spatial_dims][1:])
    assert onnx_max_diff(model, [torch.randn(shape)], path=tmp_path / "model.onnx") < 1e-4
