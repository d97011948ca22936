"""The settings of the ``nnunet`` preprocessing part: ``model.json``'s ``preprocess`` object.

Written by ``seg import-nnunet`` from a trained model's ``plans.json`` and ``dataset.json``::

    "preprocess": {
      "network_dims": 3,                      # 2 for nnU-Net's 2d configuration (slice by slice)
      "transpose_forward": [0, 1, 2],         # plans.json, applied after nnU-Net's axis order
      "target_spacing": [1.0, 1.0, 1.0],      # the configuration's spacing, transposed order
      "normalization": [{"scheme": "zscore", "use_mask": false}, ...],   # one per channel
      "resample_data": {"order": 3, "order_z": 0, "force_separate_z": null, "anisotropy_threshold": 3},
      "resample_logits": {"order": 1, "order_z": 0, "force_separate_z": null, "anisotropy_threshold": 3},
      "crop_fill": [10000.0, -10000.0, ...]   # per output channel: logits outside the non-zero crop
    }

Normalisation schemes (nnU-Net's names in ``plans.json`` -> ours): ``ZScoreNormalization`` ->
``zscore`` (``use_mask``: statistics and change only inside the non-zero mask),
``CTNormalization`` -> ``ct`` (clip to the dataset's foreground 0.5/99.5 percentiles ``lower``/
``upper``, then subtract ``mean`` and divide by ``std``), ``NoNormalization`` -> ``none``,
``RescaleTo01Normalization`` -> ``rescale_to_0_1``, ``RGBTo01Normalization`` -> ``rgb_to_0_1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .resample import Resampling

__all__ = ["SCHEMES", "NnunetSpec"]

# scheme -> the numbers it needs
SCHEMES: dict[str, tuple[str, ...]] = {"zscore": (), "ct": ("mean", "std", "lower", "upper"), "none": (),
                                       "rescale_to_0_1": (), "rgb_to_0_1": ()}
_KEYS = ("network_dims", "transpose_forward", "target_spacing", "normalization", "resample_data",
         "resample_logits", "crop_fill")


@dataclass
class NnunetSpec:
    """nnU-Net's preprocessing of one trained configuration (see the module docstring)."""

    network_dims: int
    transpose_forward: list[int]
    target_spacing: list[float]
    normalization: list[dict[str, Any]]
    resample_data: Resampling = field(default_factory=Resampling)
    resample_logits: Resampling = field(default_factory=lambda: Resampling(order=1))
    crop_fill: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.network_dims not in (2, 3):
            raise ValueError(f"preprocess.network_dims: must be 2 or 3, got {self.network_dims!r}")
        if sorted(self.transpose_forward) != [0, 1, 2]:
            raise ValueError(f"preprocess.transpose_forward: expected a permutation of [0, 1, 2], "
                             f"got {self.transpose_forward!r}")
        if len(self.target_spacing) != self.network_dims or not all(
                isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in self.target_spacing):
            raise ValueError(f"preprocess.target_spacing: expected {self.network_dims} positive numbers, "
                             f"got {self.target_spacing!r}")
        self.target_spacing = [float(s) for s in self.target_spacing]
        if not self.normalization:
            raise ValueError("preprocess.normalization: needs one entry per channel")
        for index, entry in enumerate(self.normalization):
            _check_scheme(index, entry)
        if not self.crop_fill or not all(isinstance(v, (int, float)) for v in self.crop_fill):
            raise ValueError("preprocess.crop_fill: expected one number per output channel")

    @property
    def inverse_transpose(self) -> list[int]:
        """``transpose_backward``: the permutation that undoes ``transpose_forward``."""
        return [self.transpose_forward.index(axis) for axis in range(3)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"network_dims": self.network_dims, "transpose_forward": list(self.transpose_forward),
                "target_spacing": list(self.target_spacing),
                "normalization": [dict(entry) for entry in self.normalization],
                "resample_data": self.resample_data.to_dict(), "resample_logits": self.resample_logits.to_dict(),
                "crop_fill": list(self.crop_fill)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NnunetSpec:
        """Build from ``model.json``'s ``preprocess`` object (ValueError naming the key)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"preprocess: expected an object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_KEYS))
        missing = [key for key in _KEYS[:4] if key not in data]
        if unknown or missing:
            raise ValueError(f"preprocess: unknown key(s) {unknown}" if unknown
                             else f"preprocess.{missing[0]}: required by the nnunet part")
        resampling = {}
        for key in ("resample_data", "resample_logits"):
            try:
                resampling[key] = Resampling.from_dict(data.get(key, {} if key == "resample_data" else {"order": 1}))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"preprocess.{key}: {exc}") from None
        if not isinstance(data["normalization"], list) or not isinstance(data["transpose_forward"], list):
            raise ValueError("preprocess.normalization: expected a list of objects")
        return cls(network_dims=data["network_dims"], transpose_forward=list(data["transpose_forward"]),
                   target_spacing=list(data["target_spacing"]), normalization=list(data["normalization"]),
                   crop_fill=list(data.get("crop_fill", [])), **resampling)


def _check_scheme(index: int, entry: Any) -> None:
    where = f"preprocess.normalization[{index}]"
    if not isinstance(entry, dict) or entry.get("scheme") not in SCHEMES:
        raise ValueError(f"{where}: expected {{'scheme': one of {sorted(SCHEMES)}, ...}}, got {entry!r}")
    for key in SCHEMES[entry["scheme"]]:
        value = entry.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"{where}.{key}: required number for scheme '{entry['scheme']}'")
    if entry["scheme"] == "zscore" and not isinstance(entry.get("use_mask", False), bool):
        raise ValueError(f"{where}.use_mask: expected true or false")
