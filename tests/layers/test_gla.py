"""GatedLinearAttention and VisionGLABlock: wiring, causality, global reach, grads, export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import seg.layers.gla as gla_layer
from seg.layers.gla import GatedLinearAttention, VisionGLABlock, gated_linear_attention
from seg.layers.ops.gla import gla_recurrent
from tests.layers.helpers import EXPORTERS, assert_all_params_get_grad, randomize_


def _gla(dim: int = 32, **kwargs) -> GatedLinearAttention:
    torch.manual_seed(0)
    return randomize_(GatedLinearAttention(dim, num_heads=4, **kwargs))


def test_gla_module_matches_manual_recurrence() -> None:
    """Projections, gate normaliser, norm and swish gate, recomputed by hand over the oracle."""
    m = _gla(chunk_size=8).double()
    x = torch.randn(2, 19, 32, dtype=torch.float64)
    heads = lambda t: t.reshape(2, 19, 4, -1).transpose(1, 2)  # noqa: E731
    g = F.logsigmoid(m.gk_proj(x)) / m.gate_logit_normalizer
    o, _ = gla_recurrent(heads(m.q_proj(x)), heads(m.k_proj(x)), heads(m.v_proj(x)), heads(g))
    o = o.transpose(1, 2)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6) * m.g_norm.weight
    want = m.o_proj((o * F.silu(m.g_proj(x)).reshape(2, 19, 4, -1)).reshape(2, 19, -1))
    torch.testing.assert_close(m(x), want)


def test_gla_module_is_causal() -> None:
    m = _gla()
    x = torch.randn(1, 23, 32)
    y = m(x)
    x2 = x.clone()
    x2[:, 11] += 1.0
    y2 = m(x2)
    torch.testing.assert_close(y2[:, :11], y[:, :11])
    assert (y2[:, 11:] - y[:, 11:]).abs().amax(dim=-1).min() > 1e-6


def test_gla_module_chunk_size_does_not_change_the_result() -> None:
    x = torch.randn(2, 70, 32, dtype=torch.float64)
    small, large = _gla(chunk_size=4).double(), _gla(chunk_size=64).double()
    torch.testing.assert_close(small(x), large(x))


def test_gla_module_gradients_reach_every_parameter() -> None:
    m = GatedLinearAttention(32, num_heads=2, expand_k=1.0, expand_v=2.0)
    y = m(torch.randn(2, 9, 32))
    assert y.shape == (2, 9, 32)
    assert_all_params_get_grad(m, y.square().mean())


def test_backend_selection() -> None:
    x = torch.randn(1, 2, 10, 4)
    g = -torch.rand(1, 2, 10, 4)
    # On CPU, auto is the torch path.
    torch.testing.assert_close(
        gated_linear_attention(x, x, x, g, "auto"), gated_linear_attention(x, x, x, g, "torch")
    )
    with pytest.raises(ValueError, match="backend"):
        gated_linear_attention(x, x, x, g, "cuda")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend"):
        GatedLinearAttention(8, num_heads=2, backend="triton")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="fla"):
        gated_linear_attention(x, x, x, g, "fla")
    with pytest.raises(ValueError, match="divide"):
        GatedLinearAttention(10, num_heads=4)


def _saved_numel(module: torch.nn.Module, x: torch.Tensor) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return total


def test_gla_memory_is_linear_in_tokens() -> None:
    """Activation memory saved for backward grows 4x for 4x tokens (softmax attention: 16x)."""
    m = GatedLinearAttention(16, num_heads=2)
    small, large = (_saved_numel(m, torch.randn(1, t, 16)) for t in (256, 1024))
    assert large / small < 4.2


@pytest.mark.parametrize(("spatial_dims", "shape"), [(2, (2, 16, 7, 5)), (3, (1, 16, 3, 5, 4))])
def test_vision_block_shapes_and_gradients(spatial_dims: int, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    block = VisionGLABlock(16, spatial_dims, num_heads=2, drop_path=0.1)
    y = block(torch.randn(shape))
    assert y.shape == shape
    assert_all_params_get_grad(block, y.square().mean())


@pytest.mark.parametrize(("spatial_dims", "shape"), [(2, (1, 8, 6, 5)), (3, (1, 8, 3, 4, 5))])
def test_vision_block_reaches_both_ends_of_the_volume(spatial_dims: int, shape: tuple[int, ...]) -> None:
    """Bidirectional scan: the first voxel sees the last and the last sees the first."""
    block = randomize_(VisionGLABlock(8, spatial_dims, num_heads=2)).eval()
    x = torch.randn(shape)
    y = block(x)
    first, last = (0,) * spatial_dims, tuple(s - 1 for s in shape[2:])
    for changed, watched in ((last, first), (first, last)):
        x2 = x.clone()
        # Not a constant shift: LayerNorm over channels would erase it.
        x2[(0, slice(None), *changed)] += torch.randn(shape[1])
        diff = (block(x2) - y)[(0, slice(None), *watched)].abs().max()
        assert diff > 1e-6, f"voxel {watched} does not see voxel {changed}"


def test_vision_block_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError, match="spatial"):
        VisionGLABlock(8, 3, num_heads=2)(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="spatial_dims"):
        VisionGLABlock(8, 1, num_heads=2)


def test_gla_module_onnx_parity(onnx_max_diff) -> None:
    assert onnx_max_diff(_gla(chunk_size=16), [torch.randn(2, 37, 32)]) < 1e-4


# Every case through the TorchScript exporter (opset 17); the dynamo exporter (seconds per
# export) on the 3D case only, which covers the same ops.
@pytest.mark.parametrize(
    ("spatial_dims", "shape", "exporter"),
    [
        (2, (2, 16, 9, 7), "torchscript-17"),
        (3, (1, 16, 5, 6, 7), "torchscript-17"),
        (3, (1, 16, 5, 6, 7), "dynamo-18"),
    ],
)
def test_vision_block_onnx_parity(
    onnx_max_diff, spatial_dims: int, shape: tuple[int, ...], exporter: str
) -> None:
    assert exporter in EXPORTERS
    block = randomize_(VisionGLABlock(16, spatial_dims, num_heads=2))
    assert onnx_max_diff(block, [torch.randn(shape)], exporter) < 1e-4


@pytest.mark.gpu
@pytest.mark.parametrize(("spatial_dims", "shape"), [(2, (2, 32, 24, 40)), (3, (1, 32, 12, 16, 20))])
def test_vision_block_fla_matches_torch_backend_on_cuda(spatial_dims: int, shape: tuple[int, ...], cuda) -> None:
    """The whole block on fla's kernels against the pure-torch chunked form: outputs and every
    parameter's gradient, in float32 and under the bf16 autocast training uses (a few thousand
    tokens: many chunks, both scan directions)."""
    if gla_layer._fla_chunk_gla() is None:
        pytest.skip("flash-linear-attention is not installed")
    fla = randomize_(VisionGLABlock(32, spatial_dims, num_heads=2, backend="fla")).to(cuda)
    ref = VisionGLABlock(32, spatial_dims, num_heads=2, backend="torch").to(cuda)
    ref.load_state_dict(fla.state_dict())
    x = torch.randn(shape, device=cuda)
    for dtype, tol in ((torch.float32, 2e-3), (torch.bfloat16, 3e-2)):
        outs, grads = [], []
        for block in (fla, ref):
            block.zero_grad()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                y = block(x)
            y.float().square().mean().backward()
            outs.append(y.float())
            grads.append({n: p.grad.float().clone() for n, p in block.named_parameters()})
        errors = {name: float((grads[0][name] - want).abs().max() / want.abs().max().clamp_min(1e-8))
                  for name, want in grads[1].items()}
        errors["output"] = float((outs[0] - outs[1]).abs().max() / outs[1].abs().max())
        worst = max(errors, key=errors.__getitem__)
        print(f"fla vs torch {spatial_dims}D {dtype}: worst relative error {errors[worst]:.2e} ({worst})")
        assert errors[worst] <= tol, f"{dtype}: {worst} off by {errors[worst]:.2e}"
