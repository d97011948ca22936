"""The three per-case stages every runner drives: read + prepare, infer, restore + write.

1. :func:`load_case` reads a case and prepares it for the network (the bundle's preprocessing
   part), after checking on shapes alone that it fits the memory limit;
2. :func:`infer_case` runs the Gaussian sliding window (and mirroring) with a backend's
   ``predict_batch``, in the bundle's blending space;
3. :func:`finish_case` restores the scores to the input grid, decodes and post-processes the label
   map and writes it (extras first, the label file last: only its record marks a case done).

The runners (:mod:`seg_runtime.runners`: this process, Ray Data; later the service and the DICOM
node) import these and nothing of one another. Everything a stage needs besides the case is one
picklable :class:`CasePipeline`, resolved once per run from the bundle and the
:class:`~seg_runtime.options.PredictOptions`; the network is handed to :func:`infer_case` as a
``predict_batch`` callable, never stored in the pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .bundle import Bundle
from .cases import Case
from .dicom_seg import DICOM_SEG_SUFFIX, write_dicom_seg
from .geometry import CaseError, Geometry
from .io import read_case, write_labels, write_probabilities
from .limits import check_model_grid, max_memory_bytes
from .options import PredictOptions
from .outputs import labels_on_input_grid
from .parts import Blend
from .preview import preview_path, write_preview
from .tiling import PredictBatch, sliding_window_inference

logger = logging.getLogger(__name__)

# Model-grid scores up to this size stay float32; larger ones are held in float16 (half the
# memory, values rounded once to within 5e-4, which moves only near-tie voxels' labels).
PROBABILITY_BUDGET_BYTES = 512 * 2**20


@dataclass(frozen=True)
class CasePipeline:
    """What the stages need besides the case: the model description, its parts and the run's options.

    Attributes:
        bundle: The model description (grid, patch, labels).
        preprocessor: The bundle's preprocessing part.
        blend: The bundle's blending part.
        postprocessor: The post-processing part, with ``--keep-largest`` applied.
        mirror_axes: Spatial axes mirrored for TTA; None without mirroring.
        batch_size: Patches per ``predict_batch`` call.
        save_probabilities, preview, dicom_seg: The optional outputs.
        max_bytes: Memory limit per case in bytes.
        progress: A progress bar over each case's patches.
        version: The runtime version written into DICOM-SEG.
    """

    bundle: Bundle
    preprocessor: Any
    blend: Blend
    postprocessor: Any
    mirror_axes: tuple[int, ...] | None
    batch_size: int
    save_probabilities: bool = False
    preview: bool = False
    dicom_seg: bool = False
    max_bytes: int | None = None
    progress: bool = False
    version: str = __version__

    @classmethod
    def resolve(cls, bundle: Bundle, options: PredictOptions, default_batch_size: int = 1) -> CasePipeline:
        """The pipeline of a run: the bundle's parts and defaults, overridden by ``options``."""
        tta = bundle.tta if options.tta is None else options.tta
        keep = None if options.keep_largest is None else list(options.keep_largest)
        return cls(
            bundle=bundle,
            preprocessor=bundle.preprocessor,
            blend=bundle.blend,
            postprocessor=bundle.postprocessor(keep),
            mirror_axes=bundle.tta_axes if tta else None,
            batch_size=options.batch_size or default_batch_size,
            save_probabilities=options.save_probabilities,
            preview=options.preview,
            dicom_seg=options.dicom_seg,
            max_bytes=max_memory_bytes(options.max_memory_gb),
            progress=options.progress,
        )

    @property
    def tta(self) -> bool:
        """Whether outputs are mirrored (recorded with every run)."""
        return self.mirror_axes is not None


@dataclass
class Loaded:
    """A case read and prepared for the network (the first stage's product)."""

    image: np.ndarray | None
    geometry: Geometry
    state: Any
    first_channel: np.ndarray | None = None  # the raw first channel (float16), for the preview


def error_message(exc: BaseException) -> str:
    """A case's failure as one line: the message of a case error, else type and message."""
    return str(exc) if isinstance(exc, CaseError) else f"{type(exc).__name__}: {exc}"


def load_case(case: Case, pipeline: CasePipeline) -> Loaded:
    """Read and prepare one case (a prefetch thread's, or a Ray task's, work).

    Raises:
        CaseError: unreadable input, or a case whose model grid would exceed the memory limit
            (checked on shapes before anything is resampled).
    """
    bundle = pipeline.bundle
    dims = pipeline.preprocessor.input_dims(bundle.spatial_dims)
    image, geometry = read_case(case, dims, bundle.in_channels, pipeline.max_bytes)
    grid = pipeline.preprocessor.grid_shape(tuple(image.shape[1:]), geometry)
    check_model_grid(case.paths[0], grid, bundle.in_channels, bundle.output_channels, pipeline.max_bytes)
    first = _preview_copy(image[0]) if pipeline.preview else None
    prepared, state = pipeline.preprocessor.prepare(image, geometry)
    return Loaded(prepared, geometry, state, first)


def _preview_copy(channel: np.ndarray) -> np.ndarray:
    """The first channel in float16 for the preview: half the memory, plenty for 8-bit display."""
    limit = float(np.finfo(np.float16).max)
    return np.clip(channel, -limit, limit, out=np.empty(channel.shape, np.float16), casting="same_kind")


def infer_case(loaded: Loaded, pipeline: CasePipeline, predict_batch: PredictBatch) -> np.ndarray:
    """The network's part: Gaussian sliding window (and mirroring) on the model grid.

    Large volumes blend into float16 (see :func:`probability_dtype`); the model-grid image is
    dropped afterwards.

    Returns:
        Scores on the model grid (probabilities or logits, as the blend says). Shape: [K, *S'].
    """
    bundle = pipeline.bundle
    scores = sliding_window_inference(
        loaded.image,
        predict_batch,
        bundle.patch_size,
        num_classes=bundle.output_channels,
        overlap=bundle.overlap,
        batch_size=pipeline.batch_size,
        mirror_axes=pipeline.mirror_axes,
        progress=pipeline.progress,
        dtype=probability_dtype(bundle.output_channels, loaded.image.shape[1:]),
        activation=pipeline.blend.per_patch,
        importance=pipeline.blend.importance,
    )
    loaded.image = None
    return scores


def finish_case(loaded: Loaded, scores: np.ndarray, case: Case, target: Path, pipeline: CasePipeline) -> None:
    """Back to the input grid, decode, post-process, write (extras first, the label file last)."""
    bundle, blend = pipeline.bundle, pipeline.blend
    labels, restored = labels_on_input_grid(
        scores,
        lambda channels, first: pipeline.preprocessor.restore(channels, loaded.state, first_channel=first),
        keep_scores=pipeline.save_probabilities,
        paint_labels=bundle.paint_labels,
        threshold=blend.threshold,
    )
    del scores
    pipeline.postprocessor.apply(labels, float(np.prod(loaded.geometry.spacing[: bundle.spatial_dims])))
    if restored is not None:
        suffix = ".npz" if bundle.spatial_dims == 2 else ".nii.gz"
        path = target.parent / f"{case.id}_probabilities{suffix}"
        write_probabilities(path, blend.probabilities(restored), loaded.geometry)
        del restored
    _write_extras(loaded, labels, case, target, pipeline)
    # The label file is written last, and only its record (with its checksum) marks it done.
    write_labels(target, labels, loaded.geometry)


def _write_extras(loaded: Loaded, labels: np.ndarray, case: Case, target: Path, pipeline: CasePipeline) -> None:
    """The optional outputs: preview PNG (best effort) and DICOM-SEG (for DICOM inputs)."""
    if pipeline.preview and loaded.first_channel is not None:
        try:
            where = write_preview(
                preview_path(target.parent, case.id),
                loaded.first_channel,
                labels,
                loaded.geometry if labels.ndim == 3 else None,
            )
            logger.debug("case %s: preview %s", case.id, where)
        except Exception as exc:  # a quick-look picture must never cost the prediction
            logger.warning("case %s: no preview (%s: %s)", case.id, type(exc).__name__, exc)
        loaded.first_channel = None
    if pipeline.dicom_seg:
        if case.kind != "dicom":
            logger.warning("case %s: not a DICOM series input; no DICOM-SEG written", case.id)
            return
        write_dicom_seg(
            target.parent / f"{case.id}{DICOM_SEG_SUFFIX}",
            labels.reshape(tuple(loaded.geometry.shape)),  # a 2D model drops a lone slice axis
            case.paths[0],
            pipeline.bundle,
            software_version=pipeline.version,
        )


def probability_dtype(num_classes: int, shape: Sequence[int]) -> type:
    """float32 for scores within :data:`PROBABILITY_BUDGET_BYTES`, else float16."""
    size = 4 * num_classes * int(np.prod(shape, dtype=np.int64))
    return np.float32 if size <= PROBABILITY_BUDGET_BYTES else np.float16
