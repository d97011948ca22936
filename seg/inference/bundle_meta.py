"""The deploy description of a trained model: one ``seg_runtime.Bundle`` built from its config.

Both predictors read everything (channels, patch, preprocessing, labels) from this one object, so
``seg predict`` and ``seg-run`` cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import seg
from seg.config import Config
from seg.data.transforms import preprocess_spec
from seg_runtime.bundle import Bundle


def bundle_from_config(cfg: Config, provenance: dict[str, Any] | None = None) -> Bundle:
    """Describe the model of ``cfg`` for deployment (``model.json``)."""
    data = cfg.data
    prov = {"seg_version": seg.__version__, "config_hash": cfg.digest(), "model": cfg.model.name,
            "model_size": cfg.model.size, "experiment": cfg.name}
    prov.update(provenance or {})
    return Bundle(
        spatial_dims=data.spatial_dims, in_channels=data.in_channels, channel_names=list(data.channel_names),
        channel_files=list(data.channel_files) if data.channel_files else None, num_classes=data.num_classes,
        labels=dict(data.labels), regions={k: list(v) for k, v in data.regions.items()},
        patch_size=list(cfg.patch_size), overlap=cfg.infer.overlap, preprocess=preprocess_spec(data),
        keep_largest=list(cfg.infer.keep_largest),
        remove_small=dict(cfg.infer.remove_small),
        tta=cfg.infer.tta,
        outputs=cfg.model.outputs,
        provenance=prov,
        label_codes={name: code.model_dump(exclude_none=True) for name, code in data.label_codes.items()},
        label_values=file_values(data.labels, data.label_values),
    )


def file_values(labels: dict[str, int], label_values: dict[int, int] | None) -> dict[str, int]:
    """Class name -> the value its voxels have in the dataset's label files (``model.json``'s
    ``label_values``), from ``data.label_values`` (file value -> class index); where several file values
    map to one class, the smallest. Empty when the files hold the class indices."""
    if not label_values:
        return {}
    values = {name: min((raw for raw, cls in label_values.items() if cls == index), default=index)
              for name, index in labels.items()}
    return {} if all(values[name] == index for name, index in labels.items()) else values
