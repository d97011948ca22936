"""The pipeline parts of an imported nnU-Net model (registered in :mod:`seg_runtime.parts`).

- preprocessing part ``nnunet`` (:class:`NnunetPreprocessor`, settings :class:`~.spec.NnunetSpec`);
- post-processing part ``nnunet`` (:class:`NnunetPostprocessor`): the components nnU-Net's
  ``postprocessing.json`` keeps, settings ``{"keep_largest": [[labels...], ...]}`` (in
  ``model.json``'s ``postprocess``): for each entry in order, the voxels of those labels outside
  the largest connected component of their union (neighbours across faces, edges and corners)
  become background; components of equal largest size are all kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..geometry import Geometry
from .prepare import grid_shape, prepare, restore
from .spec import NnunetSpec

__all__ = ["NnunetPostprocessor", "NnunetPreprocessor"]


@dataclass(frozen=True)
class NnunetPreprocessor:
    """nnU-Net's preparation (see :mod:`.prepare`): no reorientation, crop, normalise, resample."""

    spec: NnunetSpec
    name: ClassVar[str] = "nnunet"
    spec_type: ClassVar[type] = NnunetSpec
    copies_input: ClassVar[bool] = True  # the non-zero crop is a new array, with its mask

    @staticmethod
    def parse(settings: Mapping[str, Any]) -> NnunetSpec:
        """Parse ``model.json``'s ``preprocess`` object (ValueError naming the key)."""
        return NnunetSpec.from_dict(settings)

    def check(self, spatial_dims: int, in_channels: int) -> None:
        if spatial_dims != 3:
            raise ValueError("spatial_dims: the nnunet part runs on nnU-Net's 3-axis grid (2d models "
                             f"as patches one slice deep), got {spatial_dims}")
        if len(self.spec.normalization) != in_channels:
            raise ValueError(f"preprocess.normalization: needs {in_channels} entries, one per channel")

    def input_dims(self, spatial_dims: int) -> tuple[int, ...]:
        """2d configurations run on 2D images and, slice by slice, on volumes; 3d ones on volumes."""
        return (2, 3) if self.spec.network_dims == 2 else (3,)

    def grid_shape(self, shape: tuple[int, ...], geometry: Geometry) -> tuple[int, ...]:
        return grid_shape(shape, geometry, self.spec)

    def layout(self, shape: tuple[int, ...], geometry: Geometry) -> tuple[tuple[int, ...], bool, bool]:
        """The network grid, always counted as resampled (the crop and the resampling make new arrays),
        never reoriented (nnU-Net only transposes, a view)."""
        return self.grid_shape(shape, geometry), True, False

    def prepare(self, image: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Any]:
        return prepare(image, geometry, self.spec)

    def restore(self, array: np.ndarray, state: Any, *, labels: bool = False, first_channel: int = 0) -> np.ndarray:
        return restore(array, state, self.spec, labels=labels, first_channel=first_channel)


def keep_steps(settings: Mapping[str, Any], num_classes: int) -> tuple[tuple[int, ...], ...]:
    """The label sets of ``postprocess.keep_largest`` (ValueError naming the key)."""
    if not isinstance(settings, Mapping) or set(settings) - {"keep_largest"}:
        raise ValueError(f"postprocess: expected {{'keep_largest': [[labels...], ...]}}, got {settings!r}")
    steps = settings.get("keep_largest", [])
    if not isinstance(steps, list):
        raise ValueError("postprocess.keep_largest: expected a list of label lists")
    parsed = []
    for index, step in enumerate(steps):
        if not isinstance(step, list) or not step or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 < v < num_classes for v in step):
            raise ValueError(f"postprocess.keep_largest[{index}]: expected foreground labels in "
                             f"1..{num_classes - 1}, got {step!r}")
        parsed.append(tuple(step))
    return tuple(parsed)


@dataclass(frozen=True)
class NnunetPostprocessor:
    """nnU-Net's chosen post-processing: keep the largest component of each label set, in order."""

    steps: Sequence[tuple[int, ...]]
    name: ClassVar[str] = "nnunet"

    def apply(self, labels: np.ndarray, voxel_volume: float) -> np.ndarray:
        from scipy import ndimage

        full = ndimage.generate_binary_structure(labels.ndim, labels.ndim)
        for members in self.steps:
            mask = np.isin(labels, members)
            components, count = ndimage.label(mask, structure=full)
            if count <= 1:
                continue
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            labels[mask & (sizes[components] != sizes.max())] = 0
        return labels

    def settings(self) -> dict[str, Any]:
        """The label sets kept to their largest component, in order (no remove-small)."""
        return {"keep_largest": [list(step) for step in self.steps], "remove_small": {}}
