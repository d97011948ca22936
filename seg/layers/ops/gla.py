"""Gated linear attention (GLA) math: a naive recurrent oracle and a chunkwise-parallel form.

Yang et al. 2023, "Gated Linear Attention Transformers with Hardware-Efficient Training".
With a per-key-channel forget gate ``alpha_t = exp(g_t)`` (``g_t <= 0``, given in log space)::

    S_t = diag(alpha_t) S_{t-1} + k_t^T v_t        S_t: [Dk, Dv]
    o_t = (scale * q_t) S_t

Both functions take head-first tensors ``q, k, g: [B, H, T, Dk]`` and ``v: [B, H, T, Dv]`` and
return ``(o [B, H, T, Dv], final_state [B, H, Dk, Dv] | None)``. Nothing here has parameters;
the module in ``seg.layers.gla`` owns projections, gates and the choice of backend.

Numerical design of :func:`gla_chunked`: every decay factor that is materialised is
``exp(a - b)`` with ``a <= b`` (a later cumulative log gate minus an earlier one), so it lies in
``(0, 1]``. The textbook factorisation ``(q * exp(G)) @ (k * exp(-G))^T`` needs ``exp(-G)``, which
overflows once the gates are strong (``g = -20`` over 64 steps is ``exp(1280)``). Instead:

* inter-chunk: states carry decays relative to chunk boundaries (always ``<= 1``);
* intra-chunk, across sub-chunks: both factors are taken relative to the start of the query's
  sub-chunk (secondary chunking), so each factor is ``<= 1``;
* intra-chunk, inside a sub-chunk: the pairwise decay is materialised per key channel
  (``[sub, sub, Dk]``) and the anti-causal half is replaced by 0 *before* ``exp``.

Everything is plain tensor algebra on static shapes (cumsum, exp, where, matmul, a Python loop
over the number of chunks), so it exports to ONNX (opset 17) and runs on CPU. Cost is
``O(T * (C + sub) * Dk + T * C * Dv + (T / C) * Dk * Dv)``: linear in ``T``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gla_chunked", "gla_recurrent"]

# Tokens per cache block of gla_chunked (per batch and head); measured best at 1-2k on a 2-core CPU.
_BLOCK_TOKENS = 1024


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, g: Tensor) -> None:
    if q.dim() != 4 or q.shape != k.shape or q.shape != g.shape:
        raise ValueError(
            f"q, k, g must share one [B, H, T, Dk] shape; got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(g.shape)}"
        )
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be [B, H, T, Dv] matching q {tuple(q.shape)}; got {tuple(v.shape)}")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half-precision cumulative log gates lose the small differences the decays are made of.
    return torch.float64 if dtype == torch.float64 else torch.float32


def gla_recurrent(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Naive step-by-step GLA; the reference every faster form is tested against.

    Args:
        q: queries. Shape: [B, H, T, Dk].
        k: keys. Shape: [B, H, T, Dk].
        v: values. Shape: [B, H, T, Dv].
        g: log forget gates, ``<= 0``. Shape: [B, H, T, Dk].
        scale: query scale; ``Dk ** -0.5`` when None.
        initial_state: state before the first step. Shape: [B, H, Dk, Dv].
        output_final_state: also return the state after the last step.

    Returns:
        ``(o, final_state)``; o Shape: [B, H, T, Dv]; final_state Shape: [B, H, Dk, Dv] or None.
    """
    _check_inputs(q, k, v, g)
    out_dtype = v.dtype
    ct = _compute_dtype(q.dtype)
    q, k, v, g = (t.to(ct) for t in (q, k, v, g))
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    b, h, t_len, dk = q.shape
    state = q.new_zeros(b, h, dk, v.shape[-1])
    if initial_state is not None:
        state = state + initial_state.to(ct)
    outputs = []
    for t in range(t_len):
        state = g[:, :, t].exp().unsqueeze(-1) * state + k[:, :, t].unsqueeze(-1) * v[:, :, t].unsqueeze(-2)
        outputs.append(((q[:, :, t] * scale).unsqueeze(-2) @ state).squeeze(-2))
    o = torch.stack(outputs, dim=2) if outputs else v.new_zeros(v.shape)
    return o.to(out_dtype), (state if output_final_state else None)


def gla_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    chunk_size: int = 64,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    sub_chunk_size: int = 8,
) -> tuple[Tensor, Tensor | None]:
    """Chunkwise-parallel GLA in pure torch: same result as :func:`gla_recurrent`, linear cost.

    Any ``T`` works: padding to a multiple of ``chunk_size`` with ``k = v = 0``, ``g = 0`` (no
    decay) at the end changes neither the outputs kept nor the final state.

    Args:
        q: queries. Shape: [B, H, T, Dk].
        k: keys. Shape: [B, H, T, Dk].
        v: values. Shape: [B, H, T, Dv].
        g: log forget gates, ``<= 0``. Shape: [B, H, T, Dk].
        chunk_size: tokens per chunk ``C``; the state recurrence runs over ``T / C`` chunks.
        scale: query scale; ``Dk ** -0.5`` when None.
        initial_state: state before the first step. Shape: [B, H, Dk, Dv].
        output_final_state: also return the state after the last step.
        sub_chunk_size: secondary chunk (capped at ``chunk_size``, must divide it).

    Returns:
        ``(o, final_state)``; o Shape: [B, H, T, Dv]; final_state Shape: [B, H, Dk, Dv] or None.
    """
    _check_inputs(q, k, v, g)
    sub = min(sub_chunk_size, chunk_size)
    if chunk_size < 1 or sub < 1 or chunk_size % sub:
        raise ValueError(f"chunk_size ({chunk_size}) must be a positive multiple of sub_chunk_size ({sub})")
    out_dtype, ct = v.dtype, _compute_dtype(q.dtype)
    b, h, t_len, dk = q.shape
    scale = dk**-0.5 if scale is None else scale
    # Ceil division kept positive: traced-size floor division of negatives truncates in ONNX.
    n_chunks = max(1, (t_len + chunk_size - 1) // chunk_size)
    pad = n_chunks * chunk_size - t_len
    # [B, H, N, C, D]: chunks become a batch dimension for everything but the state recurrence.
    q, k, v, g = (
        F.pad(x.to(ct), (0, 0, 0, pad)).reshape(b, h, n_chunks, chunk_size, x.shape[-1]) for x in (q, k, v, g)
    )
    q = q * scale
    # Cache blocking: a block of chunks at a time keeps every intermediate (the [sub, sub, Dk]
    # decays above all) inside the CPU caches; one pass over the whole sequence made time grow
    # ~7x per 4x tokens past ~16k tokens because each op then streamed from DRAM.
    state = None if initial_state is None else initial_state.to(ct)
    o, state = _blocks(q, k, v, g, state, chunk_size, sub)
    o = o.reshape(b, h, -1, v.shape[-1])[:, :, :t_len]
    return o.to(out_dtype), (state if output_final_state else None)


def _blocks(q: Tensor, k: Tensor, v: Tensor, g: Tensor, state: Tensor | None, chunk_size: int,
            sub: int) -> tuple[Tensor, Tensor]:
    """Both chunk contributions, a block of chunks at a time. Shapes: [B, H, N, C, D] -> o [B, H, N, C, Dv]."""
    per_block = max(1, _BLOCK_TOKENS // chunk_size)
    # No split op at all for short sequences (ONNX Split rejects a size larger than the axis).
    blocks = (
        zip(*(x.split(per_block, dim=2) for x in (q, k, v, g))) if q.shape[2] > per_block else [(q, k, v, g)]
    )
    outputs = []
    for qb, kb, vb, gb in blocks:
        # Log decay from the chunk start to each position (inclusive); non-increasing along C.
        cum = gb.cumsum(dim=-2)
        o_inter, state = _inter_chunk(qb, kb, vb, cum, state)
        outputs.append(_intra_chunk(qb, kb, vb, cum, sub) + o_inter)
    return (torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]), state


def _inter_chunk(
    q: Tensor, k: Tensor, v: Tensor, cum: Tensor, initial_state: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Contribution of all earlier chunks through the carried state.

    Shapes: q, k, cum [B, H, N, C, Dk]; v [B, H, N, C, Dv]. Returns o [B, H, N, C, Dv] and the
    final state [B, H, Dk, Dv].
    """
    b, h, _, _, dk = q.shape
    cum_end = cum[..., -1:, :]
    # Each key decayed to its chunk end: exp(cum_end - cum) <= 1.
    chunk_kv = (k * torch.exp(cum_end - cum)).transpose(-1, -2) @ v  # [B, H, N, Dk, Dv]
    chunk_decay = torch.exp(cum_end).transpose(-1, -2)  # [B, H, N, Dk, 1]
    state = q.new_zeros(b, h, dk, v.shape[-1])
    if initial_state is not None:
        state = state + initial_state.to(q.dtype)
    states_in = []
    # The only sequential part: T / C cheap steps (unrolled into the ONNX graph at export).
    # unbind, not indexing: each indexed slice would back-propagate a full-size zero tensor,
    # making the backward pass quadratic in the number of chunks.
    for decay, kv in zip(chunk_decay.unbind(2), chunk_kv.unbind(2), strict=True):
        states_in.append(state)
        state = decay * state + kv
    o = (q * torch.exp(cum)) @ torch.stack(states_in, dim=2)
    return o, state


def _intra_chunk(q: Tensor, k: Tensor, v: Tensor, cum: Tensor, sub: int) -> Tensor:
    """Causal attention inside each chunk with the relative per-channel decay.

    ``A[x, y] = sum_d q[x, d] k[y, d] exp(cum[x, d] - cum[y, d])`` for ``y <= x``, computed in
    ``sub``-sized blocks so that no factor exceeds 1. Shapes: q, k, cum [B, H, N, C, Dk];
    v [B, H, N, C, Dv]; returns [B, H, N, C, Dv].
    """
    *lead, c, dk = q.shape
    m = c // sub
    qs, ks, cs = (x.reshape(*lead, m, sub, dk) for x in (q, k, cum))
    scores = _diagonal_blocks(qs, ks, cs)  # [..., M, M, sub, sub]
    if m > 1:
        scores = scores + _off_diagonal_blocks(qs, ks, cs)
    # [..., M_i, sub_x, M_j, sub_y] -> [..., C, C]
    scores = scores.transpose(-3, -2).reshape(*lead, c, c)
    return scores @ v


def _diagonal_blocks(qs: Tensor, ks: Tensor, cs: Tensor) -> Tensor:
    """Scores inside each sub-chunk, placed on the block diagonal of ``[M, M, sub, sub]``."""
    m, sub = qs.shape[-3], qs.shape[-2]
    causal = torch.ones(sub, sub, dtype=torch.bool, device=qs.device).tril()
    diff = cs.unsqueeze(-2) - cs.unsqueeze(-3)  # [..., M, sub_x, sub_y, Dk] = cum_x - cum_y
    # Anti-causal entries would be exp(positive); zero them before exp (and mask after).
    diff = diff.masked_fill(~causal.unsqueeze(-1), 0.0)
    diag = (qs.unsqueeze(-2) * ks.unsqueeze(-3) * torch.exp(diff)).sum(-1)
    diag = diag * causal.to(diag.dtype)  # [..., M, sub, sub]
    eye = torch.eye(m, dtype=diag.dtype, device=diag.device)
    return eye[:, :, None, None] * diag.unsqueeze(-3)


def _off_diagonal_blocks(qs: Tensor, ks: Tensor, cs: Tensor) -> Tensor:
    """Scores between sub-chunk ``i`` (queries) and earlier sub-chunks ``j < i`` (keys).

    Both factors are taken relative to ``ref_i``, the cumulative gate just before sub-chunk
    ``i``: ``q`` gets ``exp(cum_x - ref_i)`` and ``k`` gets ``exp(ref_i - cum_y)``, each ``<= 1``.
    """
    m = qs.shape[-3]
    ref = torch.cat([torch.zeros_like(cs[..., :1, -1, :]), cs[..., :-1, -1, :]], dim=-2)  # [..., M, Dk]
    q_rel = qs * torch.exp(cs - ref.unsqueeze(-2))  # [..., M, sub, Dk]
    lower = torch.ones(m, m, dtype=torch.bool, device=qs.device).tril(-1)[:, :, None, None]
    expo = ref[..., :, None, None, :] - cs.unsqueeze(-4)  # [..., M_i, M_j, sub_y, Dk]
    expo = expo.masked_fill(~lower, 0.0)
    k_rel = ks.unsqueeze(-4) * torch.exp(expo)
    scores = q_rel.unsqueeze(-3) @ k_rel.transpose(-1, -2)  # [..., M_i, M_j, sub_x, sub_y]
    return scores * lower.to(scores.dtype)
