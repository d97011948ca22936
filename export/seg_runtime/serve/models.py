"""The served models: each bundle's backend (one onnxruntime session) and pipeline, loaded once."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import Backend
from ..bundle import Bundle
from ..options import PredictOptions
from ..stages import CasePipeline
from .settings import ServeError

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class ServedModel:
    """One model the service answers for.

    Attributes:
        name: Its name in the URLs (``/v1/models/{name}/jobs``).
        backend: The loaded network (kept warm for the server's life).
        pipeline: The stages' settings, resolved once from the bundle (no progress bars; statistics
            on: every job gets its per-structure volumes and intensities).
        description: ``model.json`` as stored (what ``GET /v1/models`` shows).
    """

    name: str
    backend: Backend
    pipeline: CasePipeline
    description: dict[str, Any]

    @property
    def bundle(self) -> Bundle:
        return self.backend.bundle

    @property
    def fields(self) -> list[str]:
        """Form fields an upload may use: ``file``, then one per channel (in channel order)."""
        return ["file", *self.bundle.channel_names]

    def classes(self) -> list[dict[str, Any]]:
        """Label value, name and display colour of each class (the web page's legend)."""
        from ..preview import PALETTE

        found = []
        for name, value in sorted(self.bundle.labels.items(), key=lambda item: item[1]):
            if value == 0:
                continue
            code = self.bundle.label_codes.get(name, {})
            rgb = code.get("rgb") or [int(c) for c in PALETTE[(value - 1) % len(PALETTE)]]
            found.append({"value": int(value), "name": name, "rgb": [int(c) for c in rgb]})
        return found


def model_names(bundles: Sequence[Path], names: Sequence[str] | None) -> list[str]:
    """The served names: ``--name`` in order, else each bundle folder's name.

    Raises:
        ServeError: A count mismatch, a name that is not URL-safe, or a name used twice.
    """
    chosen = list(names) if names else [Path(b).resolve().name for b in bundles]
    if len(chosen) != len(bundles):
        raise ServeError(f"--name given {len(chosen)} time(s) for {len(bundles)} bundle(s): give one per bundle")
    for name in chosen:
        if not _NAME.match(name):
            raise ServeError(f"model name {name!r}: use letters, digits, '.', '_' and '-' (at most 64), "
                             "starting with a letter or digit (--name)")
    duplicates = sorted({n for n in chosen if chosen.count(n) > 1})
    if duplicates:
        raise ServeError(f"model name(s) {', '.join(duplicates)} used twice (give each bundle its own --name)")
    return chosen


def load_models(bundles: Sequence[Path], names: Sequence[str] | None,
                make_backend: Callable[[Path], Backend], dicom_seg: bool) -> dict[str, ServedModel]:
    """Load every bundle once and resolve its pipeline.

    Args:
        bundles: Bundle folders.
        names: ``--name`` values (or None).
        make_backend: Builds the backend of a bundle folder (an :class:`~seg_runtime.session.OnnxBackend`).
        dicom_seg: Write DICOM-SEG for DICOM inputs (highdicom is installed).
    """
    models = {}
    for name, folder in zip(model_names(bundles, names), bundles):
        backend = make_backend(Path(folder))
        options = PredictOptions(progress=False, dicom_seg=dicom_seg, statistics=True)
        pipeline = CasePipeline.resolve(backend.bundle, options, backend.default_batch_size)
        description = json.loads((Path(folder) / "model.json").read_text(encoding="utf-8"))
        models[name] = ServedModel(name, backend, pipeline, description)
        warm_up(models[name])
        logger.info("model %s loaded from %s", name, folder)
    return models


def warm_up(model: ServedModel) -> None:
    """One patch through the network, so the first job does not pay for onnxruntime's lazy set-up."""
    bundle = model.bundle
    patch = np.zeros((1, bundle.in_channels, *bundle.patch_size), np.float32)
    model.backend.predict_batch(patch)
