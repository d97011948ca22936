"""Inference with torch models: load a run, checkpoint or CV folder as a backend for ``seg_runtime``."""

from __future__ import annotations

from seg.inference.backend import TorchBackend
from seg.inference.loading import load_backend

__all__ = ["TorchBackend", "load_backend"]
