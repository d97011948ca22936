"""A torch network as an ONNX graph, and how closely onnxruntime reproduces it: written once for
``seg export`` (the deploy bundle) and ``seg predict --backend onnx`` (an in-memory graph).

The graph takes patches of the training patch size with a dynamic batch axis; the runtime tiles
every image into such patches, so any image size works. (Spatial axes are fixed because the models
pad inputs to a multiple of their reduction with shape arithmetic that the TorchScript exporter
would freeze anyway; a fixed patch also lets TensorRT build one engine.)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import IO, Any

import numpy as np
import torch

INPUT_NAME, OUTPUT_NAME = "image", "logits"


def export_graph(model: torch.nn.Module, shape: tuple[int, ...], destination: str | IO[bytes], opset: int) -> None:
    """Write ``model`` as ONNX (input ``image`` [B, C, *P] -> output ``logits``, dynamic batch).

    Args:
        model: The network in eval mode, training heads dropped.
        shape: An example input shape, ``(1, C, *P)``.
        destination: A file path or a writable binary file.
        opset: The ONNX opset.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(shape),), destination, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def run_session(session: Any, x: np.ndarray) -> np.ndarray:
    """The graph's logits for ``x``, float32. Shape: [B, C, *P] -> [B, K, *P]"""
    return np.asarray(session.run(None, {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0],
                      dtype=np.float32)


def parity(reference: Callable[[np.ndarray], np.ndarray], session: Any, x: np.ndarray) -> float:
    """Max abs difference between onnxruntime's logits and ``reference``'s for ``x``.

    Non-finite logits on either side give ``nan``, which fails every tolerance check.

    Raises:
        ValueError: the two output shapes differ.
    """
    want, got = reference(x), run_session(session, x)
    if got.shape != want.shape:
        raise ValueError(f"onnx output shape {got.shape} differs from torch {want.shape}")
    diff = float(np.abs(got - want).max())
    return diff if math.isfinite(diff) and np.isfinite(want).all() else float("nan")
