"""Inference with the torch model: ``Predictor`` (load once, predict folders)."""

from __future__ import annotations

from seg.inference.predictor import Predictor

__all__ = ["Predictor"]
