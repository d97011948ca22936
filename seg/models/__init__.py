"""Networks: encoders, decoders, the Segmenter and the model registry.

Importing this package registers every model (ours and the baselines).
"""

from __future__ import annotations

from seg.models import ag_unet, baselines, gla_encoder, region_encoder, timm_encoder  # noqa: F401  (registers)
from seg.models.factory import MODEL_INFO, MODELS, build_model, create_model, prepare_export
from seg.models.segmenter import FeatureInfo, Segmenter

__all__ = ["MODEL_INFO", "MODELS", "FeatureInfo", "Segmenter", "build_model", "create_model", "prepare_export"]
