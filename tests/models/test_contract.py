"""The model contract, over every registered model x (2D, 3D).

Models are read from ``MODELS.names()`` at collection, so a model registered later is covered
without editing this file (give it tiny settings in ``TINY_PARAMS`` to keep the suite fast;
without an entry it is built at ``size="small"``). A builder that rejects a dimensionality
with ``ValueError`` (e.g. 2D-only smp/timm models), or lacks an optional package, is skipped
with its own message; a rejection of dims the model is registered for (``MODEL_INFO``, what ``seg
models`` prints) fails instead. Each check records ``(model, dims, check[, onnx diff])`` as a user
property; ``tests/models/conftest.py`` prints them as a table at the end of the session.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from seg.models import MODEL_INFO, MODELS, prepare_export

IN_CHANNELS, NUM_CLASSES, BATCH = 2, 3, 2
SHAPES = {2: (64, 64), 3: (32, 32, 32)}
ODD_SHAPES = {2: (67, 61), 3: (33, 30, 29)}
ONNX_TOLERANCE = 1e-3

# Tiny widths so the whole suite runs in CPU seconds; keys must be accepted by the builder.
TINY_PARAMS: dict[str, dict[str, Any]] = {
    "ag_unet": {"channels": (8, 16, 32)},
    "gla_unet": {"channels": (8, 16, 32), "conv_levels": 1, "depths": (1, 1)},
    "region_unet": {"channels": (8, 16, 32), "conv_levels": 1, "depths": (1, 1), "window_size": 4},
    "monai_attention_unet": {"channels": (4, 8, 16)},
    "monai_unet": {"channels": (4, 8, 16), "num_res_units": 1},
    "monai_segresnet": {"init_filters": 8, "blocks_down": (1, 1, 1)},
    "monai_swin_unetr": {"depths": (1, 1, 1, 1)},
    "smp_unet": {"decoder_channels": (16, 8, 8, 4, 4)},
    # channels 16, 8, 16, 24, 288: not monotonic, so the decoder must read feature_info
    "timm_unet": {"encoder_name": "mobilenetv3_small_050"},
}

CASES = [pytest.param(name, dims, id=f"{name}-{dims}d") for name in MODELS.names() for dims in (2, 3)]


def build(name: str, dims: int, seed: int = 0, deep_supervision: bool = False) -> nn.Module:
    """The tiny model, or a skip when the builder rejects ``dims`` (ValueError) or misses a package."""
    torch.manual_seed(seed)
    builder = MODELS.get(name)  # direct call: a TypeError (bad TINY_PARAMS) must fail, not skip
    try:
        return builder(spatial_dims=dims, in_channels=IN_CHANNELS, num_classes=NUM_CLASSES, size="small",
                       deep_supervision=deep_supervision, **TINY_PARAMS.get(name, {}))
    except ValueError as err:
        if dims in MODEL_INFO[name].dims:
            pytest.fail(f"{name} is registered for {dims}D (seg models says so) but rejects it: {err}")
        pytest.skip(f"rejected: {err}")
    except ImportError as err:
        pytest.skip(f"missing dependency: {err}")


def batch(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    """Shape: [BATCH, IN_CHANNELS, *shape]"""
    return torch.randn((BATCH, IN_CHANNELS, *shape), generator=torch.Generator().manual_seed(seed))


def as_list(out: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


Record = Callable[..., None]


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """One intra-op thread per test: tiny tensors gain nothing from more, and on a busy 2-core
    machine two OpenMP threads stall each other (this file took 125-250 s with 2, 40 s with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def record(record_property: Callable[[str, object], None]) -> Record:
    """``record(name, dims, check, **extra)``: tags the test for the session's contract table."""

    def _record(name: str, dims: int, check: str, **extra: Any) -> None:
        record_property("contract", {"model": name, "dims": dims, "check": check, **extra})

    return _record


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_forward_shape(name: str, dims: int, record: Record) -> None:
    """Train mode without deep supervision gives one tensor (eval mode: see the ONNX test)."""
    record(name, dims, "shape")
    model = build(name, dims).train()
    with torch.no_grad():
        out = model(batch(SHAPES[dims]))
    assert isinstance(out, torch.Tensor), f"train mode returned {type(out)}"
    assert tuple(out.shape) == (BATCH, NUM_CLASSES, *SHAPES[dims])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_odd_input_size(name: str, dims: int, record: Record) -> None:
    record(name, dims, "odd")
    model = build(name, dims).eval()
    with torch.no_grad():
        out = model(batch(ODD_SHAPES[dims]))
    assert tuple(out.shape) == (BATCH, NUM_CLASSES, *ODD_SHAPES[dims])


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_backward_reaches_every_parameter(name: str, dims: int, record: Record) -> None:
    record(name, dims, "backward")
    # Deep supervision on (models without it ignore the flag): aux heads must learn too.
    model = build(name, dims, deep_supervision=True).train()
    outs = as_list(model(batch(ODD_SHAPES[dims])))
    assert tuple(outs[0].shape) == (BATCH, NUM_CLASSES, *ODD_SHAPES[dims])
    sum(o.float().pow(2).mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:10]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:10]}"


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_state_dict_round_trip(name: str, dims: int, record: Record) -> None:
    record(name, dims, "state_dict")
    source = build(name, dims, seed=0)
    with torch.no_grad():  # a training forward moves running statistics off their defaults
        source.train()(batch(SHAPES[dims], seed=2))
    target = build(name, dims, seed=1)
    target.load_state_dict(source.state_dict())
    x = batch(SHAPES[dims])
    with torch.no_grad():
        assert torch.equal(source.eval()(x), target.eval()(x))


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_onnx_parity(name: str, dims: int, record: Record, tmp_path: Path) -> None:
    """The deploy route: prepare_export, TorchScript exporter, fixed patch, dynamic batch."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from seg.inference.onnx_graph import export_graph

    record(name, dims, "onnx")
    model = prepare_export(build(name, dims, deep_supervision=True))
    path = tmp_path / "model.onnx"
    # Batch 1 at export, batch 2 at run time: proves the batch axis stayed dynamic.
    export_graph(model, (1, IN_CHANNELS, *SHAPES[dims]), str(path), opset=17)
    onnx.checker.check_model(str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = batch(SHAPES[dims])
    with torch.no_grad():
        ref = model(x)
    assert isinstance(ref, torch.Tensor) and tuple(ref.shape) == (BATCH, NUM_CLASSES, *SHAPES[dims])
    ref = ref.numpy()
    got = session.run(None, {"image": x.numpy()})[0]
    assert got.shape == ref.shape
    diff = float(np.abs(got - ref).max())
    record(name, dims, "onnx", onnx_max_abs_diff=diff)
    print(f"{name} {dims}D onnx max abs diff {diff:.3g}")
    assert math.isfinite(diff) and diff < ONNX_TOLERANCE


def _max_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| over max |want|: one number for every model's output scale."""
    return float((got.float().cpu() - want).abs().max() / want.abs().max().clamp_min(1e-6))


@pytest.fixture
def no_tf32() -> Iterator[None]:
    """TF32 convolutions and matmuls keep 10 mantissa bits: off for full-precision comparisons."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.gpu
@pytest.mark.parametrize(("name", "dims"), CASES)
def test_cuda_fp32_matches_cpu_and_bf16_trains(name: str, dims: int, cuda: torch.device, no_tf32: None) -> None:
    """On CUDA: full precision computes what the CPU computes (no tensor left on the CPU, no
    device-only path that changes the maths); under bf16 autocast, as ``fit`` and ``Predictor`` run
    there, the output stays close and a backward gives every parameter a finite gradient."""
    # fla's Triton kernels, which GLA takes on CUDA, may still use TF32 dots: hence 5e-3, not 1e-5;
    # a tensor on the wrong device or a CUDA-only path with other maths is off by O(1).
    model = build(name, dims, deep_supervision=True).eval()
    x = batch(SHAPES[dims])
    with torch.no_grad():
        want = as_list(model(x))[0]
        model = model.to(cuda)
        assert _max_error(as_list(model(x.to(cuda)))[0], want) < 5e-3
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = as_list(model(x.to(cuda)))[0]
    assert torch.isfinite(low).all()
    assert _max_error(low, want) < 0.1, "bf16 autocast drifted from the full-precision output"
    model.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        outs = as_list(model(batch(ODD_SHAPES[dims]).to(cuda)))
    sum(o.float().pow(2).mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:10]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:10]}"
