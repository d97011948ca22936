"""The pipeline parts a bundle selects by name: preparing a case, blending patches, cleaning labels.

``model.json`` (schema 2) names one part of each kind under ``pipeline``; bundles that name none
(every schema-1 bundle) get today's defaults::

    "pipeline": {"preprocess": "seg", "blend": "probabilities", "postprocess": "seg"}

- **preprocess** turns a case read from disk into the network's grid and maps network outputs back
  (``seg``: reorient, normalise, resample; its settings are ``model.json``'s ``preprocess``, parsed
  by the part, so another framework's part brings its own settings);
- **blend** says in which space patches, mirrorings and folds are averaged: ``probabilities``
  (softmax or sigmoid per patch, seg's training-time validation), ``logits`` (activation once at
  the end, after restoring to the input grid) or ``nnunet`` (logits, weighted by nnU-Net's
  Gaussian: sigma 1/8 of the patch, centred on voxel ``size // 2``);
- **postprocess** edits the label map on the input grid (``seg``: keep-largest and remove-small by
  structure name; ``nnunet``: the components nnU-Net's ``postprocessing.json`` keeps).

Imported nnU-Net models use ``{"preprocess": "nnunet", "blend": "nnunet", "postprocess": "nnunet"}``
(:mod:`seg_runtime.nnunet`).

A new framework (an imported nnU-Net model) is a new part registered here, not a branch in the
stages that run them (:mod:`seg_runtime.stages`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from .geometry import Geometry
from .nnunet import NnunetPostprocessor, NnunetPreprocessor
from .outputs import REGION_THRESHOLD
from .postprocess import postprocess_labels
from .preprocess import PreprocessSpec, model_grid_shape, preprocess_image, restore_to_input
from .tiling import sigmoid, softmax

KINDS = ("preprocess", "blend", "postprocess")
DEFAULT_PIPELINE: dict[str, str] = {"preprocess": "seg", "blend": "probabilities", "postprocess": "seg"}


class Preprocessor(Protocol):
    """Prepares a case for the network and maps the network's grid back to the case's."""

    name: ClassVar[str]

    def grid_shape(self, shape: tuple[int, ...], geometry: Geometry) -> tuple[int, ...]:
        """The model-grid shape for an image of spatial ``shape``, from shapes alone (memory checks)."""
        ...

    def prepare(self, image: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Any]:
        """The model-grid image (Shape: [C, *S'], float32) and the state :meth:`restore` needs.

        ``image`` (float32, from :func:`seg_runtime.io.read_case`) is the caller's to give away: the
        part may overwrite it to save a copy.
        """
        ...

    def layout(self, shape: tuple[int, ...], geometry: Geometry) -> tuple[tuple[int, ...], bool, bool]:
        """``(model grid shape, resampled, reoriented)`` from shapes alone: what the memory bound needs."""
        ...

    #: Whether :meth:`prepare` copies the whole input (and a mask) before resampling (the memory bound).
    copies_input: ClassVar[bool]

    def restore(self, array: np.ndarray, state: Any, *, labels: bool = False, first_channel: int = 0) -> np.ndarray:
        """Model-grid channels back on the input grid; ``array[0]`` is output channel ``first_channel``.

        Shape: [K, *S'] -> [K, *S_in]
        """
        ...

    def input_dims(self, spatial_dims: int) -> tuple[int, ...]:
        """The spatial ranks of the images it takes, for a bundle of ``spatial_dims``."""
        ...

    def check(self, spatial_dims: int, in_channels: int) -> None:
        """Raise ValueError (``preprocess.<key>: ...``) where the settings do not fit the model."""
        ...


@dataclass(frozen=True)
class SegPreprocessor:
    """seg's preparation: reorient (3D), normalise, resample (see :mod:`seg_runtime.preprocess`).

    Its settings (``model.json``'s ``preprocess``) are a :class:`PreprocessSpec`.
    """

    spec: PreprocessSpec
    name: ClassVar[str] = "seg"
    spec_type: ClassVar[type] = PreprocessSpec
    copies_input: ClassVar[bool] = False  # normalised in place; a copy only to reorient (see layout)

    @staticmethod
    def parse(settings: Mapping[str, Any]) -> PreprocessSpec:
        """Parse ``model.json``'s ``preprocess`` object (ValueError naming the key)."""
        return PreprocessSpec.from_dict(dict(settings))

    @property
    def target_spacing(self) -> list[float] | None:
        """The spacing the network sees (mm), or None when images keep theirs."""
        return self.spec.target_spacing

    def check(self, spatial_dims: int, in_channels: int) -> None:
        spacing = self.spec.target_spacing
        if spacing is not None and len(spacing) != spatial_dims:
            raise ValueError(f"preprocess.target_spacing: needs {spatial_dims} values")

    def grid_shape(self, shape: tuple[int, ...], geometry: Geometry) -> tuple[int, ...]:
        return model_grid_shape(shape, geometry, self.spec)

    def prepare(self, image: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Any]:
        return preprocess_image(image, geometry, self.spec, inplace=True)

    def layout(self, shape: tuple[int, ...], geometry: Geometry) -> tuple[tuple[int, ...], bool, bool]:
        grid = model_grid_shape(shape, geometry, self.spec)
        oriented = model_grid_shape(shape, geometry, dataclasses.replace(self.spec, target_spacing=None))
        reoriented = len(shape) == 3 and self.spec.orientation is not None and _reorients(geometry, self.spec)
        return grid, tuple(grid) != tuple(oriented), reoriented

    def restore(self, array: np.ndarray, state: Any, *, labels: bool = False, first_channel: int = 0) -> np.ndarray:
        return restore_to_input(array, state, labels=labels)

    def input_dims(self, spatial_dims: int) -> tuple[int, ...]:
        return (spatial_dims,)  # a 2D model also takes a volume of one slice (see read_case)


@dataclass(frozen=True)
class Blend:
    """In which space patches, mirrorings and ensemble members are averaged.

    Attributes:
        name: ``probabilities``, ``logits`` or ``nnunet``.
        per_patch: The sliding window's activation per patch: ``softmax``/``sigmoid`` (probabilities
            are blended) or ``none`` (logits are blended).
        threshold: A region is present where its blended, restored score exceeds this.
        importance: The Gaussian weighting patches: ``seg`` (centred on the patch) or ``nnunet``
            (centred on voxel ``size // 2``; see :func:`seg_runtime.tiling.gaussian_importance_map`).
    """

    name: str
    regions: bool
    per_patch: str = field(init=False)
    threshold: float = field(init=False)
    importance: str = field(init=False)

    def __post_init__(self) -> None:
        activation = "sigmoid" if self.regions else "softmax"
        object.__setattr__(self, "per_patch", activation if self.name == "probabilities" else "none")
        object.__setattr__(self, "threshold", REGION_THRESHOLD if self.name == "probabilities" else 0.0)
        object.__setattr__(self, "importance", "nnunet" if self.name == "nnunet" else "seg")

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Restored scores as probabilities (the saved ``_probabilities`` file). Shape: [K, *S]."""
        if self.name == "probabilities":
            return scores
        return sigmoid(scores) if self.regions else softmax(scores[None], axis=1)[0]


class Postprocessor(Protocol):
    """Edits a label map on the input grid, in place."""

    name: ClassVar[str]

    def apply(self, labels: np.ndarray, voxel_volume: float) -> np.ndarray:
        ...

    def settings(self) -> dict[str, Any]:
        """What it will do, as plain JSON (each output's record; skip-done compares it)."""
        ...


@dataclass(frozen=True)
class SegPostprocessor:
    """Keep-largest, then remove-small, by class or region name (:mod:`seg_runtime.postprocess`)."""

    keep_largest: Sequence[str]
    remove_small: Mapping[str, float]
    labels: Mapping[str, int]
    regions: Mapping[str, Sequence[int]]
    name: ClassVar[str] = "seg"

    def apply(self, labels: np.ndarray, voxel_volume: float) -> np.ndarray:
        return postprocess_labels(labels, self.keep_largest, self.remove_small, self.labels, self.regions,
                                  voxel_volume=voxel_volume)

    def settings(self) -> dict[str, Any]:
        return {"keep_largest": list(self.keep_largest),
                "remove_small": {k: float(v) for k, v in sorted(self.remove_small.items())}}


def _reorients(geometry: Geometry, spec: PreprocessSpec) -> bool:
    """Whether the image's axes differ from the target axis codes (flips or transposes needed)."""
    from nibabel.orientations import axcodes2ornt, io_orientation

    return not np.array_equal(io_orientation(geometry.affine), axcodes2ornt(tuple(spec.orientation.upper())))


PREPROCESSORS: dict[str, type] = {"seg": SegPreprocessor, "nnunet": NnunetPreprocessor}
BLENDS: tuple[str, ...] = ("probabilities", "logits", "nnunet")
POSTPROCESSORS: dict[str, type] = {"seg": SegPostprocessor, "nnunet": NnunetPostprocessor}
KNOWN: dict[str, Sequence[str]] = {"preprocess": tuple(PREPROCESSORS), "blend": BLENDS,
                                   "postprocess": tuple(POSTPROCESSORS)}


def check_pipeline(pipeline: Mapping[str, Any]) -> dict[str, str]:
    """The full part selection (defaults filled in) of a ``model.json`` ``pipeline`` object.

    Raises:
        ValueError: an unknown kind or part name; the message names ``pipeline.<kind>``.
    """
    unknown = sorted(set(pipeline) - set(KINDS))
    if unknown:
        raise ValueError(f"pipeline: unknown part kind(s) {unknown} (kinds: {', '.join(KINDS)})")
    chosen = {**DEFAULT_PIPELINE, **pipeline}
    for kind, name in chosen.items():
        if name not in KNOWN[kind]:
            raise ValueError(f"pipeline.{kind}: unknown part {name!r} (this seg-runtime has: "
                             f"{', '.join(KNOWN[kind])}; upgrade seg-runtime)")
    return chosen
