"""Region (window) self-attention with an optional gated output, for 2D and 3D grids.

Partition into regions (windows, optionally shifted; or semantic regions from an integer map),
attend within each with ``scaled_dot_product_attention``, reverse. The optional output gate is
the head-specific, query-dependent sigmoid gate of Qiu et al. 2025 ("Gated Attention for
Large Language Models"): ``Y * sigmoid(X W_g)`` on the SDPA output, before the output
projection; it adds input-dependent sparsity and non-linearity between values and output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import Tensor, nn

from seg.layers.ops.regions import (
    cyclic_shift,
    cyclic_unshift,
    pad_to_multiple,
    region_group_partition,
    region_group_reverse,
    window_attention_mask,
    window_partition,
    window_reverse,
)

__all__ = ["RegionAttention", "RegionAttentionBlock"]


def _as_tuple(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    out = (value,) * n if isinstance(value, int) else tuple(value)
    if len(out) != n:
        raise ValueError(f"expected {n} values, got {value}")
    return out


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class RegionAttention(nn.Module):
    """Multi-head self-attention inside windows or semantic regions of a 2D/3D grid.

    Windows: sizes that do not divide the grid are padded at the end and padded tokens are
    masked out as keys, so the result does not depend on the padding. A window larger than the
    grid along an axis shrinks to the grid (and that axis is not shifted), as in Swin.
    With ``shift`` the grid is cyclically shifted by half a window and the Swin mask keeps
    wrapped-around tokens apart.

    Semantic regions: when ``region_map`` is given, tokens attend only to tokens of the same
    region, in groups of ``prod(window_size)`` tokens sorted by (region, raster position)
    (see :func:`seg.layers.ops.regions.region_group_partition`); ``shift`` does not apply.

    Args:
        dim: channels.
        num_heads: heads; must divide ``dim``.
        spatial_dims: 2 or 3.
        window_size: window size, one int or one per axis.
        shift: use shifted windows (half a window).
        output_gate: apply the sigmoid output gate ``Y * sigmoid(X W_g)``.
        qkv_bias: bias of the q/k/v projection.

    Shape: [B, *spatial, C] (channels last) -> same; region_map [B, *spatial] integers >= 0.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        spatial_dims: int,
        window_size: int | Sequence[int],
        shift: bool = False,
        output_gate: bool = True,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.dim, self.num_heads, self.spatial_dims = dim, num_heads, spatial_dims
        self.window_size = _as_tuple(window_size, spatial_dims)
        self.shift = shift
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        # One gate score per head and channel, computed from the same (query-side) input.
        self.gate = nn.Linear(dim, dim) if output_gate else None
        self.proj = nn.Linear(dim, dim)
        self.apply(_init_weights)

    def _attend(self, tokens: Tensor, mask: Tensor | None) -> Tensor:
        """SDPA over groups of tokens. tokens [G, N, C], mask [G, N, N] (True = attend) -> [G, N, C]."""
        g, n, c = tokens.shape
        q, k, v = self.qkv(tokens).reshape(g, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask.unsqueeze(1))
        y = y.transpose(1, 2).reshape(g, n, c)
        if self.gate is not None:
            y = y * self.gate(tokens).sigmoid()
        return self.proj(y)

    def _geometry(self, spatial: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        window = tuple(min(w, s) for w, s in zip(self.window_size, spatial, strict=True))
        shift = tuple(w // 2 if self.shift and s > w else 0 for w, s in zip(window, spatial, strict=True))
        return window, shift

    def forward(self, x: Tensor, region_map: Tensor | None = None) -> Tensor:
        """Attend within regions. Shape: [B, *spatial, C] -> [B, *spatial, C]."""
        b = x.shape[0]
        # Plain ints: the window geometry is static, so masks stay constants when traced.
        spatial = tuple(int(s) for s in x.shape[1:-1])
        if len(spatial) != self.spatial_dims:
            raise ValueError(
                f"expected [B, *spatial, C] with {self.spatial_dims} spatial dims, got {tuple(x.shape)}"
            )
        if region_map is not None:
            return self._forward_semantic(x, region_map)
        window, shift = self._geometry(spatial)
        padded, pads = pad_to_multiple(x, window)
        padded_shape = tuple(s + p for s, p in zip(spatial, pads, strict=True))
        mask = window_attention_mask(padded_shape, spatial, window, shift, device=x.device)
        if any(shift):
            padded = cyclic_shift(padded, shift)
        windows = self._attend(
            window_partition(padded, window), None if mask is None else mask.repeat(b, 1, 1)
        )
        out = window_reverse(windows, window, padded_shape)
        if any(shift):
            out = cyclic_unshift(out, shift)
        crop = (slice(None), *(slice(0, s) for s in spatial), slice(None))
        return out[crop]

    def _forward_semantic(self, x: Tensor, region_map: Tensor) -> Tensor:
        b, *spatial, c = x.shape
        if tuple(region_map.shape) != (b, *spatial):
            raise ValueError(
                f"region_map must be [B, *spatial] = {(b, *spatial)}, got {tuple(region_map.shape)}"
            )
        groups, mask, order = region_group_partition(
            x.reshape(b, -1, c), region_map.reshape(b, -1), math.prod(self.window_size)
        )
        return region_group_reverse(self._attend(groups, mask), order).reshape(x.shape)


class RegionAttentionBlock(nn.Module):
    """Pre-norm transformer block: ``x + RegionAttention(LN(x))`` then ``x + MLP(LN(x))``.

    Args:
        dim: channels.
        spatial_dims: 2 or 3.
        num_heads: attention heads.
        window_size: window size, one int or one per axis.
        shift: shifted windows (alternate False/True between consecutive blocks).
        output_gate: sigmoid output gate on the attention output.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        drop_path: stochastic depth rate of both residual branches.

    Shape: [B, C, *spatial] -> [B, C, *spatial]; region_map [B, *spatial] (optional).
    """

    def __init__(
        self,
        dim: int,
        spatial_dims: int,
        num_heads: int,
        window_size: int | Sequence[int],
        shift: bool = False,
        output_gate: bool = True,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.norm1 = nn.LayerNorm(dim)
        self.attn = RegionAttention(
            dim, num_heads, spatial_dims, window_size, shift=shift, output_gate=output_gate
        )
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.mlp.apply(_init_weights)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, region_map: Tensor | None = None) -> Tensor:
        """Shape: [B, C, *spatial] -> [B, C, *spatial]."""
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"expected [B, C, *spatial] with {self.spatial_dims} spatial dims, got {tuple(x.shape)}"
            )
        nd = self.spatial_dims
        # Explicit non-negative permutations: movedim(-1, ...) exports an invalid ONNX Transpose.
        x = x.permute(0, *range(2, nd + 2), 1)
        x = x + self.drop_path(self.attn(self.norm1(x), region_map))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.permute(0, nd + 1, *range(1, nd + 1))
