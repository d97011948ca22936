"""Imported nnU-Net v2 models in the torch-free runtime: their preprocessing, resampling and
post-processing as pipeline parts (see :mod:`seg_runtime.parts`), written from nnU-Net's
documentation and observed behaviour."""

from __future__ import annotations

from .parts import NnunetPostprocessor, NnunetPreprocessor
from .resample import Resampling
from .spec import NnunetSpec

__all__ = ["NnunetPostprocessor", "NnunetPreprocessor", "NnunetSpec", "Resampling"]
