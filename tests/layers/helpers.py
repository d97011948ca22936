"""Plain helpers for the layer (and model) tests."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

# The exporters the project may use: the TorchScript exporter at opset 17 and the dynamo
# (torch.export) exporter, whose lowest opset is 18 in current torch.
EXPORTERS = {"torchscript-17": (False, 17), "dynamo-18": (True, 18)}


def onnx_max_diff(
    module: nn.Module, inputs: Sequence[Tensor], exporter: str = "torchscript-17", *, path: Path
) -> float:
    """Export ``module`` in eval mode to ``path``, run it in onnxruntime, return max |onnx - torch|.

    The TorchScript export marks the batch axis dynamic, as ``seg.export_onnx`` does, and the
    graph is also run on a batch twice as large as the one it was traced with.
    """
    import onnxruntime as ort

    dynamo, opset = EXPORTERS[exporter]
    module = module.eval()
    names = [f"input{i}" for i in range(len(inputs))]
    kwargs = {} if dynamo else {"input_names": names, "dynamic_axes": {n: {0: "batch"} for n in names}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(inputs), str(path), opset_version=opset, dynamo=dynamo, **kwargs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert len(session.get_inputs()) == len(inputs), "an input was folded into the graph"
    batches = [list(inputs)]
    if not dynamo:
        batches.append([torch.cat([x, torch.roll(x, 1, dims=-1)]) for x in inputs])
    worst = 0.0
    for batch in batches:
        feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), batch, strict=True)}
        (got,) = session.run(None, feed)
        with torch.no_grad():
            want = module(*batch).numpy()
        assert got.shape == want.shape
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def randomize_(module: nn.Module, std: float = 0.2, seed: int = 0) -> nn.Module:
    """Give every parameter non-trivial values: init-time weights (std 0.02, zero biases,
    unit norms) make branches nearly vanish, and parity tests would compare residuals."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)
    return module


def assert_all_params_get_grad(module: nn.Module, loss: Tensor) -> None:
    """Backprop ``loss`` and check every trainable parameter got a finite, non-zero gradient."""
    loss.backward()
    missing = [
        n
        for n, p in module.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not missing, f"parameters without gradient: {missing}"
    bad = [n for n, p in module.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad}"
