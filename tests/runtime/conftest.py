"""Fixtures for the torch-free runtime tests."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
EXPORT_DIR = HERE.parents[1] / "export"
try:  # the runtime is its own dist; test it from the source tree when it is not installed
    import seg_runtime  # noqa: F401
except ImportError:
    sys.path.insert(0, str(EXPORT_DIR))
# Test modules import ``runtime_helpers`` whatever pytest's import mode.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from runtime_helpers import make_bundle_dir  # noqa: E402


@pytest.fixture
def bundle_factory(tmp_path: Path) -> Callable[..., Path]:
    """``make(name="bundle", **kwargs)`` → a bundle folder under tmp_path."""

    def make(name: str = "bundle", **kwargs: object) -> Path:
        return make_bundle_dir(tmp_path / name, **kwargs)

    return make
