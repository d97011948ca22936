"""Fixtures for the layer tests."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from tests.layers.helpers import onnx_max_diff as _onnx_max_diff


@pytest.fixture
def onnx_max_diff(tmp_path: Path) -> Callable[..., float]:
    """``run(module, inputs, exporter="torchscript-17") -> max |onnx - torch|`` in a temp dir."""
    pytest.importorskip("onnxruntime")
    return partial(_onnx_max_diff, path=tmp_path / "model.onnx")
