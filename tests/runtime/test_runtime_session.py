"""onnxruntime provider selection and the ONNX predictor's batch handling."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import THRESHOLD_BIAS, THRESHOLD_WEIGHT, pointwise_logits

from seg_runtime.bundle import BundleError
from seg_runtime.session import OnnxBackend, create_session, resolve_providers

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def test_resolve_providers() -> None:
    assert resolve_providers("auto", [CPU]) == [CPU]
    assert resolve_providers("auto", [TRT, CUDA, CPU]) == [CUDA, CPU]  # TensorRT only on request
    assert resolve_providers("tensorrt", [TRT, CUDA, CPU]) == [TRT, CUDA, CPU]
    assert resolve_providers("cuda", [TRT, CUDA, CPU]) == [CUDA, CPU]
    assert resolve_providers("cpu", [CUDA, CPU]) == [CPU]
    with pytest.raises(ValueError, match="unknown provider 'gpu'"):
        resolve_providers("gpu", [CPU])


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_unavailable_provider_warns_and_falls_back(
    bundle_factory: Callable[..., Path], caplog: pytest.LogCaptureFixture, provider: str
) -> None:
    import onnxruntime as ort

    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the fallback path is not reachable")
    with caplog.at_level(logging.WARNING, logger="seg_runtime.session"):
        session = create_session(bundle_factory() / "model.onnx", provider)
    assert session.get_providers() == [CPU]
    assert (
        f"provider '{provider}' requested but" in caplog.text and "using CPUExecutionProvider" in caplog.text
    )


@pytest.mark.parametrize("fixed_batch", [None, 1, 2])
def test_predict_batch_matches_numpy(bundle_factory: Callable[..., Path], fixed_batch: int | None) -> None:
    predictor = OnnxBackend(bundle_factory(fixed_batch=fixed_batch), provider="cpu")
    x = np.random.default_rng(0).normal(size=(3, 1, 5, 6, 7)).astype(np.float32)
    logits = predictor.predict_batch(x)
    expected = np.stack([pointwise_logits(s, THRESHOLD_WEIGHT, THRESHOLD_BIAS) for s in x])
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_mismatched_io_names_are_a_bundle_error(bundle_factory: Callable[..., Path]) -> None:
    bundle = bundle_factory()
    text = (bundle / "model.json").read_text().replace('"input_name": "image"', '"input_name": "x"')
    (bundle / "model.json").write_text(text)
    with pytest.raises(BundleError, match="does not match model.json input_name 'x'"):
        OnnxBackend(bundle, provider="cpu")
    (bundle / "model.onnx").unlink()
    with pytest.raises(BundleError, match="model file named in model.json not found"):
        OnnxBackend(bundle, provider="cpu")


def test_cpu_session_options(bundle_factory: Callable[..., Path]) -> None:
    import os

    import onnxruntime as ort

    from seg_runtime.session import physical_cores, session_options

    cores = physical_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    options = session_options()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.intra_op_num_threads == cores
    assert session_options(3).intra_op_num_threads == 3
    predictor = OnnxBackend(bundle_factory(), provider="cpu", threads=1)
    assert predictor.providers == [CPU]
