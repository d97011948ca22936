"""RegionAttention against brute-force masked full attention; the block's grads and export."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor

from seg.layers.region_attention import RegionAttention, RegionAttentionBlock
from tests.layers.helpers import EXPORTERS, assert_all_params_get_grad, randomize_


def _full_masked_attention(attn: RegionAttention, x: Tensor, allowed: Tensor) -> Tensor:
    """Explicit softmax attention over all tokens of the grid, restricted by ``allowed`` [B, N, N]."""
    b, *spatial, c = x.shape
    tokens = x.reshape(b, -1, c)
    n, h = tokens.shape[1], attn.num_heads
    q, k, v = attn.qkv(tokens).reshape(b, n, 3, h, -1).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
    if attn.gate is not None:
        y = y * torch.sigmoid(attn.gate(tokens))
    return attn.proj(y).reshape(x.shape)


def _window_ids(spatial: tuple[int, ...], window: tuple[int, ...], shifted: bool) -> Tensor:
    """Per token, the id of its (shifted) window in original coordinates; Swin semantics:
    windows shrink to the grid, shift by half a window only where the grid is larger."""
    ids = []
    for s, w in zip(spatial, window, strict=True):
        w = min(w, s)
        shift = w // 2 if shifted and s > w else 0
        ids.append((torch.arange(s) + w - shift) // w if shift else torch.arange(s) // w)
    grids = torch.meshgrid(*ids, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], -1)  # [N, nd]


CASES = [
    ((8, 8), (4, 4)),  # divisible
    ((7, 9), (4, 4)),  # padding on both axes
    ((3, 10), (4, 4)),  # window larger than the grid on one axis
    ((5, 4, 6), (2, 3, 4)),  # 3D, anisotropic window
]


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("output_gate", [False, True])
@pytest.mark.parametrize(("spatial", "window"), CASES)
def test_window_attention_matches_brute_force(spatial, window, shift: bool, output_gate: bool) -> None:
    torch.manual_seed(0)
    attn = randomize_(RegionAttention(8, 2, len(spatial), window, shift=shift, output_gate=output_gate))
    x = torch.randn(2, *spatial, 8)
    ids = _window_ids(spatial, window, shift)
    allowed = (ids[:, None] == ids[None]).all(-1).expand(2, -1, -1)
    torch.testing.assert_close(attn(x), _full_masked_attention(attn, x, allowed), rtol=1e-5, atol=1e-5)


def _region_allowed(region: Tensor, group_size: int) -> Tensor:
    """Same region and same group of the (region, position)-sorted order, by a Python loop."""
    b, n = region.shape
    allowed = torch.zeros(b, n, n, dtype=torch.bool)
    for i, row in enumerate(region.tolist()):
        order = sorted(range(n), key=lambda t: (row[t], t))
        group = {tok: rank // group_size for rank, tok in enumerate(order)}
        for p, q in itertools.product(range(n), repeat=2):
            allowed[i, p, q] = row[p] == row[q] and group[p] == group[q]
    return allowed


@pytest.mark.parametrize(("spatial", "window"), [((5, 7), (2, 3)), ((3, 4, 5), (2, 2, 2)), ((4, 5), (5, 5))])
def test_semantic_region_attention_matches_brute_force(spatial, window) -> None:
    torch.manual_seed(1)
    attn = randomize_(RegionAttention(8, 2, len(spatial), window))
    x = torch.randn(2, *spatial, 8)
    region = torch.randint(0, 3, (2, *spatial))
    group = torch.tensor(window).prod().item()
    allowed = _region_allowed(region.reshape(2, -1), group)
    torch.testing.assert_close(
        attn(x, region), _full_masked_attention(attn, x, allowed), rtol=1e-5, atol=1e-5
    )


def test_semantic_regions_within_one_group_are_exact_region_attention() -> None:
    """With a group at least as large as the grid, the grouping is invisible."""
    attn = randomize_(RegionAttention(8, 2, 2, (6, 6)))
    x = torch.randn(1, 5, 6, 8)
    region = torch.randint(0, 4, (1, 5, 6))
    flat = region.reshape(1, -1)
    allowed = flat[:, :, None] == flat[:, None, :]
    torch.testing.assert_close(
        attn(x, region), _full_masked_attention(attn, x, allowed), rtol=1e-5, atol=1e-5
    )


def test_gate_off_equals_windowed_multihead_attention() -> None:
    """Without the gate the module is plain windowed MHA (torch's nn.MultiheadAttention)."""
    torch.manual_seed(2)
    attn = randomize_(RegionAttention(8, 2, 2, (2, 4), output_gate=False))
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.qkv.weight)
        mha.in_proj_bias.copy_(attn.qkv.bias)
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)
    x = torch.randn(2, 4, 8, 8)
    want = torch.empty_like(x)
    for i, j in itertools.product(range(0, 4, 2), range(0, 8, 4)):
        win = x[:, i : i + 2, j : j + 4].reshape(2, -1, 8)
        want[:, i : i + 2, j : j + 4] = mha(win, win, win, need_weights=False)[0].reshape(2, 2, 4, 8)
    torch.testing.assert_close(attn(x), want, rtol=1e-5, atol=1e-5)


def test_output_gate_changes_the_output() -> None:
    gated = randomize_(RegionAttention(8, 2, 2, 4, output_gate=True))
    plain = RegionAttention(8, 2, 2, 4, output_gate=False)
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if not k.startswith("gate.")})
    x = torch.randn(1, 6, 6, 8)
    assert (gated(x) - plain(x)).abs().max() > 1e-3
    assert plain.gate is None and "gate.weight" not in plain.state_dict()


@pytest.mark.parametrize(
    ("shape", "shift"), [((2, 16, 7, 9), True), ((1, 16, 5, 3, 6), True), ((1, 16, 4, 4), False)]
)
def test_block_shapes_and_gradients(shape: tuple[int, ...], shift: bool) -> None:
    torch.manual_seed(0)
    block = RegionAttentionBlock(16, len(shape) - 2, 2, 4, shift=shift, drop_path=0.1)
    y = block(torch.randn(shape))
    assert y.shape == shape
    assert_all_params_get_grad(block, y.square().mean())


def test_block_with_region_map_shapes_and_gradients() -> None:
    block = RegionAttentionBlock(16, 3, 2, 2)
    y = block(torch.randn(1, 16, 3, 4, 5), torch.randint(0, 3, (1, 3, 4, 5)))
    assert y.shape == (1, 16, 3, 4, 5)
    assert_all_params_get_grad(block, y.square().mean())


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="divide"):
        RegionAttention(10, 4, 2, 4)
    with pytest.raises(ValueError, match="spatial"):
        RegionAttentionBlock(8, 2, 2, 4)(torch.randn(1, 8, 4, 4, 4))
    with pytest.raises(ValueError, match="region_map"):
        RegionAttention(8, 2, 2, 4)(torch.randn(1, 4, 4, 8), torch.zeros(1, 4, 5, dtype=torch.long))


# Every case through the TorchScript exporter (opset 17); the dynamo exporter (seconds per
# export) on the 2D shifted-window and semantic-region cases.
@pytest.mark.parametrize(
    ("shape", "window", "with_regions", "exporter"),
    [
        ((2, 16, 9, 7), 4, False, "torchscript-17"),
        ((1, 16, 5, 7, 4), 3, False, "torchscript-17"),
        ((1, 16, 6, 5), 4, True, "torchscript-17"),
        ((2, 16, 9, 7), 4, False, "dynamo-18"),
        ((1, 16, 6, 5), 4, True, "dynamo-18"),
    ],
)
def test_block_onnx_parity(onnx_max_diff, shape, window: int, with_regions: bool, exporter: str) -> None:
    assert exporter in EXPORTERS
    block = randomize_(RegionAttentionBlock(16, len(shape) - 2, 2, window, shift=True))
    inputs = [torch.randn(shape)]
    if with_regions:
        inputs.append(torch.randint(0, 3, (shape[0], *shape[2:])))
    assert onnx_max_diff(block, inputs, exporter) < 1e-4
