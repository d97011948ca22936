"""seg: medical image segmentation with gated encoder-decoders and a torch-free deploy runtime."""

from __future__ import annotations

__version__ = "0.1.0"
