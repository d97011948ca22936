"""Region partitioning for local attention: windows, shifted windows, semantic regions.

All functions are parameter-free, work for 2D and 3D from one code path, and use channels-last
tensors ``[B, *S, C]``. Shapes are static Python ints, so masks built from them become ONNX
constants; the semantic-region path uses only sort / gather / scatter ops (ONNX TopK,
GatherElements, ScatterElements).

Two families:

* Windows (Swin / Swin-UNETR): :func:`pad_to_multiple`, :func:`window_partition`,
  :func:`window_reverse`, :func:`cyclic_shift` / :func:`cyclic_unshift` and
  :func:`window_attention_mask`, which combines the shifted-window mask with a mask that hides
  padded tokens as keys (so results do not depend on how much padding a size needed).
* Semantic regions (RAT-style, "Region Attention Transformer"): tokens attend only to tokens
  with the same region id. Regions have arbitrary sizes, so rather than a global ``N x N``
  mask the tokens are sorted by ``(region, raster position)`` and cut into fixed-size groups:
  :func:`region_group_partition` / :func:`region_group_reverse`. Attention then runs inside
  each group with a same-region mask (a group may straddle two regions). Cost ``O(N * G)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "cyclic_shift",
    "cyclic_unshift",
    "pad_to_multiple",
    "region_group_partition",
    "region_group_reverse",
    "window_attention_mask",
    "window_partition",
    "window_reverse",
]


def pad_to_multiple(x: Tensor, multiple: Sequence[int], value: float = 0.0) -> tuple[Tensor, tuple[int, ...]]:
    """Pad the spatial dims at their end up to a multiple of ``multiple``.

    Args:
        x: channels-last tensor. Shape: [B, *S, C].
        multiple: one positive int per spatial dim.
        value: fill value.

    Returns:
        ``(padded, pads)``: padded Shape: [B, *S', C]; ``pads[d]`` is the amount added to dim d.
    """
    spatial = x.shape[1:-1]
    if len(multiple) != len(spatial):
        raise ValueError(f"multiple {tuple(multiple)} does not match spatial shape {tuple(spatial)}")
    pads = tuple((-int(s)) % int(m) for s, m in zip(spatial, multiple, strict=True))
    if not any(pads):
        return x, pads
    # F.pad lists pairs from the last dim backwards; the channel dim gets (0, 0).
    flat = [0, 0]
    for p in reversed(pads):
        flat += [0, p]
    return F.pad(x, flat, value=value), pads


def window_partition(x: Tensor, window: Sequence[int]) -> Tensor:
    """Cut a grid into non-overlapping windows, tokens of a window in raster order.

    Args:
        x: channels-last grid whose sizes divide by ``window``. Shape: [B, *S, C].
        window: window size per spatial dim.

    Returns:
        Windows. Shape: [B * nW, N, C] with ``N = prod(window)``, windows in raster order.
    """
    b, *spatial, c = x.shape
    nd = len(spatial)
    if len(window) != nd or any(s % w for s, w in zip(spatial, window, strict=True)):
        raise ValueError(f"spatial shape {tuple(spatial)} is not divisible by window {tuple(window)}")
    split = [b]
    for s, w in zip(spatial, window, strict=True):
        split += [s // w, w]
    x = x.reshape(*split, c)
    # [B, n1, w1, n2, w2, ..., C] -> [B, n1, n2, ..., w1, w2, ..., C]
    order = [0, *range(1, 2 * nd, 2), *range(2, 2 * nd + 1, 2), 2 * nd + 1]
    return x.permute(order).reshape(-1, math.prod(window), c)


def window_reverse(windows: Tensor, window: Sequence[int], spatial_shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`window_partition`.

    Args:
        windows: Shape: [B * nW, N, C].
        window: window size per spatial dim.
        spatial_shape: the (divisible) grid size ``S``.

    Returns:
        Grid. Shape: [B, *S, C].
    """
    nd = len(spatial_shape)
    counts = [s // w for s, w in zip(spatial_shape, window, strict=True)]
    c = windows.shape[-1]
    x = windows.reshape(-1, *counts, *window, c)
    # [B, n1, n2, ..., w1, w2, ..., C] -> [B, n1, w1, n2, w2, ..., C]
    order = [0]
    for d in range(nd):
        order += [1 + d, 1 + nd + d]
    return x.permute(*order, 2 * nd + 1).reshape(-1, *spatial_shape, c)


def cyclic_shift(x: Tensor, shift: Sequence[int]) -> Tensor:
    """Roll the grid by ``-shift`` so shifted windows become regular ones. Shape: [B, *S, C]."""
    return torch.roll(x, shifts=[-s for s in shift], dims=list(range(1, len(shift) + 1)))


def cyclic_unshift(x: Tensor, shift: Sequence[int]) -> Tensor:
    """Undo :func:`cyclic_shift`. Shape: [B, *S, C]."""
    return torch.roll(x, shifts=list(shift), dims=list(range(1, len(shift) + 1)))


def _shift_labels(size: int, window: int, shift: int) -> Tensor:
    """Swin's per-axis slice labels: tokens wrapped by the roll never share a label with the rest."""
    labels = torch.zeros(size, dtype=torch.long)
    if shift:
        labels[size - window : size - shift] = 1
        labels[size - shift :] = 2
    return labels


def window_attention_mask(
    padded_shape: Sequence[int],
    valid_shape: Sequence[int],
    window: Sequence[int],
    shift: Sequence[int],
    device: torch.device | None = None,
) -> Tensor | None:
    """Boolean ``[nW, N, N]`` mask (True = may attend) for (shifted) windows over a padded grid.

    Key ``j`` is visible to query ``i`` when both carry the same Swin shift label (they were
    neighbours before the cyclic shift) and ``j`` is a real token, not padding. Padded queries
    see every same-label token, so no row is empty (their outputs are cropped anyway).
    The mask depends on shapes only; it is built once per geometry and cached, and is a
    constant in exported graphs.

    Args:
        padded_shape: grid size after padding (divisible by ``window``).
        valid_shape: grid size before padding.
        window: window size per spatial dim.
        shift: cyclic shift per spatial dim (0 for none); the grid is assumed rolled by it.
        device: device of the mask.

    Returns:
        Mask Shape: [nW, N, N], or None when every pair is allowed (no shift, no padding).
    """
    key = tuple(tuple(int(v) for v in seq) for seq in (padded_shape, valid_shape, window, shift))
    if not any(key[3]) and key[0] == key[1]:
        return None
    mask = _window_mask_cpu(*key)
    return mask.to(device) if device is not None else mask


@functools.lru_cache(maxsize=64)
def _window_mask_cpu(
    padded_shape: tuple[int, ...],
    valid_shape: tuple[int, ...],
    window: tuple[int, ...],
    shift: tuple[int, ...],
) -> Tensor:
    nd = len(padded_shape)
    label = torch.zeros(padded_shape, dtype=torch.long)
    valid = torch.ones(padded_shape, dtype=torch.bool)
    for d, (p, v, w, s) in enumerate(zip(padded_shape, valid_shape, window, shift, strict=True)):
        view = [1] * nd
        view[d] = p
        label = label * 3 + _shift_labels(p, w, s).reshape(view)
        valid = valid & (torch.arange(p) < v).reshape(view)
    # Padding is rolled along with the data, so roll the validity map the same way.
    valid = torch.roll(valid, shifts=[-s for s in shift], dims=list(range(nd)))
    label_w = window_partition(label[None, ..., None], window)[..., 0]  # [nW, N]
    valid_w = window_partition(valid[None, ..., None], window)[..., 0]
    same = label_w.unsqueeze(-1) == label_w.unsqueeze(-2)
    return same & (valid_w.unsqueeze(-2) | ~valid_w.unsqueeze(-1))


def region_group_partition(x: Tensor, region_ids: Tensor, group_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Sort tokens by region and cut them into fixed-size groups for grouped attention.

    Sorting is by ``region * N + position``: the keys are unique, so the order is the same in
    torch and in any ONNX runtime (no reliance on sort stability), and tokens of a region stay
    in raster order, keeping groups spatially coherent. Region ids must be ``>= 0``.

    Args:
        x: tokens. Shape: [B, N, C].
        region_ids: integer region id per token. Shape: [B, N].
        group_size: tokens per group ``G``; ``N`` is padded up to a multiple of it.

    Returns:
        ``(groups, mask, order)``: groups Shape: [B * nG, G, C]; mask (True = same region, padding
        only matches padding) Shape: [B * nG, G, G]; order (sorted position -> token index)
        Shape: [B, N], to pass to :func:`region_group_reverse`.
    """
    b, n, c = x.shape
    positions = torch.arange(n, device=x.device, dtype=torch.long)
    keys = region_ids.long() * n + positions
    order = torch.argsort(keys, dim=1)
    tokens = torch.gather(x, 1, order.unsqueeze(-1).expand(b, n, c))
    ids = torch.gather(region_ids.long(), 1, order)
    pad = (-n) % group_size
    tokens = F.pad(tokens, (0, 0, 0, pad))
    ids = F.pad(ids, (0, pad), value=-1)
    groups = tokens.reshape(-1, group_size, c)
    ids = ids.reshape(-1, group_size)
    return groups, ids.unsqueeze(-1) == ids.unsqueeze(-2), order


def region_group_reverse(groups: Tensor, order: Tensor) -> Tensor:
    """Inverse of :func:`region_group_partition`: scatter grouped tokens back to their positions.

    Args:
        groups: Shape: [B * nG, G, C].
        order: from :func:`region_group_partition`. Shape: [B, N].

    Returns:
        Tokens. Shape: [B, N, C].
    """
    b, n = order.shape
    c = groups.shape[-1]
    tokens = groups.reshape(b, -1, c)[:, :n]
    index = order.unsqueeze(-1).expand(b, n, c)
    return torch.zeros_like(tokens).scatter(1, index, tokens)
