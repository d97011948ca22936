"""Gated linear attention modules: the 1D token mixer and the ViG-style vision block.

The math lives in :mod:`seg.layers.ops.gla`; this file owns projections, gates, norms and
the backend choice (pure torch everywhere, ``fla`` Triton kernels on CUDA when installed).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import Tensor, nn

from seg.layers.ops.gla import gla_chunked

__all__ = ["GatedLinearAttention", "VisionGLABlock", "gated_linear_attention"]

logger = logging.getLogger(__name__)

Backend = Literal["auto", "torch", "fla"]
_BACKENDS = ("auto", "torch", "fla")


@functools.lru_cache(maxsize=1)
def _fla_chunk_gla() -> Callable[..., tuple[Tensor, Tensor | None]] | None:
    """fla's chunk kernel taking ``[B, T, H, D]`` tensors, or None when fla does not import."""
    try:
        from fla.ops.gla import chunk_gla
    except Exception as err:  # fla imports triton, which fails in more ways than ImportError
        logger.debug("fla GLA kernels unavailable (%s); using the torch backend", err)
        return None
    # Recent fla takes [B, T, H, D] natively; older releases need head_first=False to accept it.
    if "head_first" in inspect.signature(chunk_gla).parameters:
        return functools.partial(chunk_gla, head_first=False)
    return chunk_gla


def _is_exporting() -> bool:
    # Triton kernels cannot be captured into an exported graph; compile copes (fla opts out).
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)()
    return bool(exporting or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing())


def gated_linear_attention(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, backend: Backend = "auto", chunk_size: int = 64
) -> Tensor:
    """GLA forward on the chosen backend (scale ``Dk ** -0.5``, zero initial state).

    ``auto`` takes fla's chunk kernel for CUDA tensors when fla imports and we are not being
    traced for export; otherwise the pure-torch chunked form, which runs and exports anywhere.

    Args:
        q: queries. Shape: [B, H, T, Dk].
        k: keys. Shape: [B, H, T, Dk].
        v: values. Shape: [B, H, T, Dv].
        g: log forget gates, ``<= 0``. Shape: [B, H, T, Dk].
        backend: "auto", "torch" or "fla".
        chunk_size: chunk length of the torch backend.

    Returns:
        Outputs. Shape: [B, H, T, Dv].
    """
    if backend not in _BACKENDS:
        raise ValueError(f"unknown GLA backend {backend!r}; valid: {', '.join(_BACKENDS)}")
    kernel = _fla_chunk_gla() if backend != "torch" else None
    if backend == "fla" and (kernel is None or not q.is_cuda):
        raise RuntimeError("backend='fla' needs CUDA tensors and the flash-linear-attention package")
    if kernel is None or not q.is_cuda or _is_exporting():
        return gla_chunked(q, k, v, g, chunk_size=chunk_size)[0]
    return _run_fla(kernel, q, k, v, g)


def _run_fla(
    kernel: Callable[..., tuple[Tensor, Tensor | None]], q: Tensor, k: Tensor, v: Tensor, g: Tensor
) -> Tensor:
    q, k, v, g = (t.transpose(1, 2).contiguous() for t in (q, k, v, g))
    o, _ = kernel(q, k, v, g, scale=q.shape[-1] ** -0.5)
    return o.transpose(1, 2)


class _RMSNorm(nn.Module):
    """RMSNorm over the last dim from plain ops: ``aten::rms_norm`` has no ONNX opset-17 export."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # Half precision squares overflow / lose the mean; float32 and float64 stay as they are.
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class GatedLinearAttention(nn.Module):
    """GLA token mixer (Yang et al. 2023): linear in the number of tokens.

    ``q, k, v`` projections; a data-dependent low-rank forget gate
    ``g = logsigmoid(W2 W1 x) / gate_logit_normalizer`` (the normaliser keeps decays mild at
    init so information travels far); per-head RMSNorm of the output, a swish output gate, and
    the output projection.

    Args:
        dim: token channels.
        num_heads: heads; must divide the key and value widths.
        expand_k: key width as a multiple of ``dim``.
        expand_v: value width as a multiple of ``dim``.
        gate_low_rank_dim: rank of the forget-gate projection.
        gate_logit_normalizer: divides the log gate.
        backend: "auto" (fla on CUDA when installed, else torch), "torch" or "fla".
        chunk_size: chunk length of the torch backend.

    Shape: [B, T, dim] -> [B, T, dim].
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        expand_k: float = 0.5,
        expand_v: float = 1.0,
        gate_low_rank_dim: int = 16,
        gate_logit_normalizer: float = 16,
        backend: Backend = "auto",
        chunk_size: int = 64,
    ) -> None:
        super().__init__()
        key_dim, value_dim = int(dim * expand_k), int(dim * expand_v)
        if key_dim % num_heads or value_dim % num_heads:
            raise ValueError(
                f"num_heads={num_heads} must divide key ({key_dim}) and value ({value_dim}) widths"
            )
        if backend not in _BACKENDS:
            raise ValueError(f"unknown GLA backend {backend!r}; valid: {', '.join(_BACKENDS)}")
        self.num_heads, self.key_dim, self.value_dim = num_heads, key_dim, value_dim
        self.gate_logit_normalizer = gate_logit_normalizer
        self.backend: Backend = backend
        self.chunk_size = chunk_size
        self.q_proj = nn.Linear(dim, key_dim, bias=False)
        self.k_proj = nn.Linear(dim, key_dim, bias=False)
        self.v_proj = nn.Linear(dim, value_dim, bias=False)
        self.gk_proj = nn.Sequential(
            nn.Linear(dim, gate_low_rank_dim, bias=False), nn.Linear(gate_low_rank_dim, key_dim)
        )
        self.g_proj = nn.Linear(dim, value_dim)
        self.g_norm = _RMSNorm(value_dim // num_heads)
        self.o_proj = nn.Linear(value_dim, dim, bias=False)
        self.apply(_init_linear)

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.reshape(b, t, self.num_heads, -1).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        """Mix tokens causally (position ``t`` sees ``<= t``). Shape: [B, T, dim] -> [B, T, dim]."""
        b, t, _ = x.shape
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        g = self._heads(F.logsigmoid(self.gk_proj(x)) / self.gate_logit_normalizer)
        o = gated_linear_attention(q, k, v, g, self.backend, self.chunk_size).transpose(1, 2)  # [B, T, H, Dv]
        gate = F.silu(self.g_proj(x)).reshape(b, t, self.num_heads, -1)
        return self.o_proj((self.g_norm(o) * gate).reshape(b, t, self.value_dim))


class BidirectionalGLA(nn.Module):
    """ViG's BiGLA mixer on a spatial grid (Liao et al. 2024), for 2D and 3D.

    Scan order: tokens are flattened in raster order (``H, W`` in 2D; ``D, H, W`` in 3D, the
    last axis fastest) and scanned forward and in reverse. Raster order is a free reshape of
    the channel-first tensor (no gather), and the two directions together give every token a
    path to every other token: the forward scan sees the "past" half of the volume, the reverse
    scan the "future" half. Raster order places neighbours along ``D`` ``H*W`` steps apart,
    where the decay has weakened them; the depthwise 3x3(x3) conv below restores exact local
    3D context, so no further (costlier) scan orders are needed. Cost: two GLA passes plus one
    depthwise conv, all linear in the number of voxels.

    Direction-wise gating: ``q, k, v`` projections are shared by both directions, the
    forget gate has one low-rank head per direction, the direction outputs are summed.
    2D/3D gating locality injection and output gate: a sigmoid gate computed from the tokens
    mixes the normalised global context with the normalised conv features,
    ``o = s * norm(global) + (1 - s) * norm(local)``.

    Shape: [B, N, dim] tokens in raster order of ``spatial_shape`` -> [B, N, dim].
    """

    def __init__(
        self,
        dim: int,
        spatial_dims: int,
        num_heads: int = 4,
        expand_k: float = 0.5,
        gate_low_rank_dim: int = 16,
        gate_logit_normalizer: float = 16,
        backend: Backend = "auto",
        chunk_size: int = 64,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        key_dim = int(dim * expand_k)
        if key_dim % num_heads or dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim ({dim}) and key width ({key_dim})")
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.spatial_dims, self.num_heads, self.key_dim = spatial_dims, num_heads, key_dim
        self.gate_logit_normalizer = gate_logit_normalizer
        self.backend: Backend = backend
        self.chunk_size = chunk_size
        self.local = conv(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        self.qkv = nn.Linear(dim, 2 * key_dim + dim, bias=False)
        self.gk_proj = nn.Sequential(
            nn.Linear(dim, gate_low_rank_dim, bias=False), nn.Linear(gate_low_rank_dim, 2 * key_dim)
        )
        self.mix_gate = nn.Linear(dim, dim)
        self.global_norm = _RMSNorm(dim // num_heads)
        self.local_norm = _RMSNorm(dim // num_heads)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.apply(_init_linear)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, -1).transpose(1, 2)

    def forward(self, x: Tensor, spatial_shape: Sequence[int]) -> Tensor:
        """Mix tokens globally in both scan directions. Shape: [B, N, dim] -> [B, N, dim]."""
        b, n, c = x.shape
        grid = x.transpose(1, 2).reshape(b, c, *spatial_shape)
        local = F.silu(self.local(grid)).flatten(2).transpose(1, 2)  # [B, N, dim]
        q, k, v = (self._heads(t) for t in self.qkv(local).split([self.key_dim, self.key_dim, c], dim=-1))
        g_fwd, g_bwd = (
            self._heads(t)
            for t in (F.logsigmoid(self.gk_proj(local)) / self.gate_logit_normalizer).chunk(2, -1)
        )
        # The reversed scan is just more batch: one GLA call covers both directions.
        q, k, v = (torch.cat([t, t.flip(2)]) for t in (q, k, v))
        o = gated_linear_attention(q, k, v, torch.cat([g_fwd, g_bwd.flip(2)]), self.backend, self.chunk_size)
        o = (o[:b] + o[b:].flip(2)).transpose(1, 2)  # [B, N, H, Dh]
        s = torch.sigmoid(self.mix_gate(local)).reshape(b, n, self.num_heads, -1)
        mixed = s * self.global_norm(o) + (1 - s) * self.local_norm(local.reshape(b, n, self.num_heads, -1))
        return self.o_proj(mixed.reshape(b, n, c))


class VisionGLABlock(nn.Module):
    """Pre-norm ViG block on a 2D/3D grid: ``x + BiGLA(LN(x))`` then ``x + MLP(LN(x))``.

    See :class:`BidirectionalGLA` for the scan order (raster, both directions), the
    locality injection and the output gate. Any spatial size works (no windows, no padding);
    cost is linear in the number of pixels/voxels.

    Args:
        dim: channels.
        spatial_dims: 2 or 3.
        num_heads: GLA heads.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        drop_path: stochastic depth rate of both residual branches.
        backend: GLA backend, "auto", "torch" or "fla".

    Shape: [B, C, *spatial] -> [B, C, *spatial].
    """

    def __init__(
        self,
        dim: int,
        spatial_dims: int,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = BidirectionalGLA(dim, spatial_dims, num_heads=num_heads, backend=backend)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.mlp.apply(_init_linear)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Shape: [B, C, *spatial] -> [B, C, *spatial]."""
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"expected [B, C, *spatial] with {self.spatial_dims} spatial dims, got {tuple(x.shape)}"
            )
        b, c, *spatial = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # raster order, last spatial axis fastest
        tokens = tokens + self.drop_path(self.mixer(self.norm1(tokens), spatial))
        tokens = tokens + self.drop_path(self.mlp(self.norm2(tokens)))
        return tokens.transpose(1, 2).reshape(b, c, *spatial)
