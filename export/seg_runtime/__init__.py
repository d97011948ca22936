"""seg_runtime: the torch-free deploy runtime for seg bundles (model.onnx + model.json).

Case discovery, image I/O with geometry, the pipeline parts (preprocessing, blending,
post-processing), Gaussian sliding-window inference and TTA, the per-case stages and the runners
that drive them live here once; ``seg predict`` reuses them with a torch backend. This package
never imports torch, MONAI or seg. onnxruntime is imported only when a session is created
(``OnnxBackend`` / ``create_session``).
"""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .bundle import SCHEMA_VERSION, Bundle, BundleError, load_bundle, save_bundle_json
from .cases import Case, discover_cases
from .geometry import CaseError, Geometry
from .io import read_case, read_image, write_labels, write_probabilities
from .manifest import RunManifest
from .options import PredictOptions
from .outputs import labels_on_input_grid, paint_regions, region_paint_labels
from .planning import select_shard
from .predict import predict_folder
from .preprocess import PreprocessSpec, PreprocessState, preprocess_image, preprocess_label, restore_to_input
from .preview import render_preview, write_preview
from .tiling import gaussian_importance_map, patch_grid, sliding_window_inference

__all__ = [
    "SCHEMA_VERSION",
    "Bundle",
    "BundleError",
    "Case",
    "CaseError",
    "Geometry",
    "OnnxBackend",
    "PredictOptions",
    "PreprocessSpec",
    "PreprocessState",
    "RunManifest",
    "__version__",
    "create_session",
    "discover_cases",
    "gaussian_importance_map",
    "labels_on_input_grid",
    "load_bundle",
    "paint_regions",
    "patch_grid",
    "predict_folder",
    "preprocess_image",
    "preprocess_label",
    "read_case",
    "read_image",
    "region_paint_labels",
    "render_preview",
    "restore_to_input",
    "save_bundle_json",
    "select_shard",
    "sliding_window_inference",
    "write_labels",
    "write_preview",
    "write_probabilities",
]


def __getattr__(name: str) -> Any:
    """Import the onnxruntime-backed names lazily (torch users never pay for onnxruntime)."""
    if name in {"OnnxBackend", "create_session"}:
        from . import session

        return getattr(session, name)
    raise AttributeError(f"module 'seg_runtime' has no attribute {name!r}")
