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

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .bundle import Bundle, BundleError
from .cases import Case
from .dicom_seg import write_dicom_seg
from .extra_files import FROM_LABEL_MAP, extra_path
from .geometry import CaseError, Geometry
from .io import read_case, write_labels, write_probabilities
from .labelmaps import read_label_map, remap_values, value_lut
from .limits import case_peak_bytes, check_case_memory, max_memory_bytes
from .options import PredictOptions
from .outputs import labels_on_input_grid
from .parts import Blend
from .preview import write_preview
from .rtstruct import write_rtstruct
from .statistics import case_statistics, statistics_path, write_case_statistics
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
        save_probabilities, preview, dicom_seg, rtstruct, statistics: The optional outputs.
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
    rtstruct: bool = False
    statistics: bool = False
    max_bytes: int | None = None
    progress: bool = False
    allow_gaps: bool = False
    value_lut: np.ndarray | None = None  # class index -> file value (labelmaps.value_lut); None: indices
    version: str = __version__

    @classmethod
    def resolve(cls, bundle: Bundle, options: PredictOptions, default_batch_size: int = 1) -> CasePipeline:
        """The pipeline of a run: the bundle's parts and defaults, overridden by ``options``.

        Raises:
            BundleError: one batch of patches alone would exceed the memory limit (a patch size no
                case can be predicted with), or a ``--keep-largest`` name is no class or region.
        """
        tta = bundle.tta if options.tta is None else options.tta
        keep = None if options.keep_largest is None else list(options.keep_largest)
        batch_size = options.batch_size or default_batch_size
        max_bytes = max_memory_bytes(options.max_memory_gb)
        _check_patch_memory(bundle, batch_size, max_bytes)
        return cls(
            bundle=bundle,
            preprocessor=bundle.preprocessor,
            blend=bundle.blend,
            postprocessor=bundle.postprocessor(keep),
            mirror_axes=bundle.tta_axes if tta else None,
            batch_size=batch_size,
            save_probabilities=options.save_probabilities,
            preview=options.preview,
            dicom_seg=options.dicom_seg,
            rtstruct=options.rtstruct,
            statistics=options.statistics,
            max_bytes=max_bytes,
            progress=options.progress,
            allow_gaps=options.allow_gaps,
            value_lut=None if options.class_indices else value_lut(bundle.labels, bundle.label_values),
        )

    @property
    def tta(self) -> bool:
        """Whether outputs are mirrored (recorded with every run)."""
        return self.mirror_axes is not None

    def peak_bytes(self, shape: tuple[int, ...], geometry: Geometry) -> int:
        """An upper bound of the bytes a case of this spatial shape holds at its peak (limits.case_peak_bytes)."""
        bundle = self.bundle
        grid, resampled, reoriented = self.preprocessor.layout(shape, geometry)
        score_itemsize = np.dtype(probability_dtype(bundle.output_channels, grid)).itemsize
        return case_peak_bytes(shape, bundle.in_channels, grid, bundle.output_channels,
                               score_itemsize=score_itemsize, resampled=resampled, reoriented=reoriented,
                               input_copy=self.preprocessor.copies_input,
                               keep_probabilities=self.save_probabilities, preview=self.preview,
                               kept_input=self.statistics)

    def output_settings(self) -> dict[str, Any]:
        """The settings of this run that change a label map beside the model: recorded with every case,
        and a rerun keeps an output only when they are the same (skip-done)."""
        encoding = "class_indices" if self.value_lut is None else "dataset_values"
        return {"tta": self.tta, **self.postprocessor.settings(), "label_encoding": encoding}


def _check_patch_memory(bundle: Bundle, batch_size: int, max_bytes: int) -> None:
    """A patch so large that one batch's input and output tensors alone exceed the memory limit can
    never run: refuse the bundle before any case is read."""
    voxels = math.prod(bundle.patch_size) * batch_size
    need = voxels * 4 * (bundle.in_channels + 2 * bundle.output_channels)
    if need > max_bytes:
        raise BundleError(f"key 'patch_size': one batch of {batch_size} patch(es) of {bundle.patch_size} needs "
                          f"{need / 2**30:.3g} GiB for its input and output alone, over the memory limit of "
                          f"{max_bytes / 2**30:.3g} GiB")


@dataclass
class Loaded:
    """A case read and prepared for the network (the first stage's product)."""

    image: np.ndarray | None
    geometry: Geometry
    state: Any
    first_channel: np.ndarray | None = None  # the raw first channel (float16), for the preview
    reserved: int = 0  # the bytes this case may hold at its peak (limits.case_peak_bytes)
    # The input as read (float32, [C, *S]), for --statistics: the exact values (HU, not a float16
    # rounding) on the input grid; the preprocessing then normalises a copy, never this one.
    source: np.ndarray | None = None


def error_message(exc: BaseException) -> str:
    """A case's failure as one line: the message of a case error, else type and message."""
    return str(exc) if isinstance(exc, CaseError) else f"{type(exc).__name__}: {exc}"


def load_case(case: Case, pipeline: CasePipeline, max_bytes: int | None = None) -> Loaded:
    """Read and prepare one case (a prefetch thread's, or a Ray task's, work).

    Args:
        case: The case.
        pipeline: The run's pipeline.
        max_bytes: The memory this case may use (a case read ahead gets what the current one leaves);
            default: the run's limit.

    Raises:
        CaseError: unreadable input, degenerate geometry, an absurd spacing.
        MemoryBudgetError: the case would need more than ``max_bytes`` at its peak (checked on
            headers, then on shapes, before anything is resampled).
    """
    bundle = pipeline.bundle
    limit = pipeline.max_bytes if max_bytes is None else max_bytes
    dims = pipeline.preprocessor.input_dims(bundle.spatial_dims)
    image, geometry = read_case(case, dims, bundle.in_channels, limit, pipeline.allow_gaps)
    check_spacing(case.paths[0], geometry, getattr(pipeline.preprocessor, "target_spacing", None),
                  bundle.spatial_dims)
    needed = pipeline.peak_bytes(tuple(image.shape[1:]), geometry)
    what = "this case (with the input kept for --statistics)" if pipeline.statistics else "this case"
    check_case_memory(case.paths[0], needed, limit, what)
    first = _preview_copy(image[0]) if pipeline.preview else None
    # The preprocessing may overwrite what it is given: --statistics keeps the input as read.
    prepared, state = pipeline.preprocessor.prepare(image.copy() if pipeline.statistics else image, geometry)
    return Loaded(prepared, geometry, state, first, needed, image if pipeline.statistics else None)


# A voxel more than this many times finer or coarser than the model's, on any axis, is a header in
# the wrong unit (metres, microns) or a typo, not a scan: resampled, it gives a confident nonsense map.
SPACING_RATIO_LIMIT = 20.0


def check_spacing(path: Path, geometry: Geometry, target: Sequence[float] | None, spatial_dims: int) -> None:
    """Refuse a voxel spacing absurd for this model (judged against its own spacing, so electron
    microscopy at 0.004 mm is fine for an EM model). Axes are compared in sorted order, which needs no
    orientation and keeps anisotropic scans (5 mm slices for a 1 mm model) within bounds.

    Raises:
        CaseError: naming the file, its spacing and the model's.
    """
    if not target:
        return
    spacing = sorted(float(s) for s in geometry.spacing[:spatial_dims])
    ratios = [s / t for s, t in zip(spacing, sorted(target), strict=False)]
    if any(not 1 / SPACING_RATIO_LIMIT <= r <= SPACING_RATIO_LIMIT for r in ratios):
        worst = max(ratios, key=lambda r: max(r, 1 / r))
        how = f"{worst:.3g}x coarser" if worst > 1 else f"{1 / worst:.3g}x finer"
        raise CaseError(f"{path}: voxel spacing {tuple(round(s, 6) for s in geometry.spacing[:spatial_dims])} mm is "
                        f"{how} than the model's {tuple(target)} mm: a header in the wrong unit? (limit "
                        f"{SPACING_RATIO_LIMIT:g}x)")


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


def finish_case(loaded: Loaded, scores: np.ndarray, case: Case, target: Path,
                pipeline: CasePipeline) -> dict[str, Path]:
    """Back to the input grid, decode, post-process, write (extras first, the label file last).

    Returns:
        The extras written (:data:`seg_runtime.extra_files.EXTRAS` name -> file), for the case's record.
    """
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
    written: dict[str, Path] = {}
    if restored is not None:
        path = extra_path("save_probabilities", target.parent, case.id, bundle.spatial_dims)
        written["save_probabilities"] = write_probabilities(path, blend.probabilities(restored), loaded.geometry)
        del restored
    written.update(write_extras(loaded, labels, case, target, pipeline))
    # The label file is written last, and only its record (with its checksum) marks it done.
    write_labels(target, labels if pipeline.value_lut is None else pipeline.value_lut[labels], loaded.geometry)
    return written


def complete_case(case: Case, target: Path, missing: Sequence[str], pipeline: CasePipeline) -> dict[str, Path]:
    """Make the extras ``missing`` of a finished case from its label map on disk, without the network.

    The input is read again (the extras need its geometry, intensities and DICOM files); the label
    map is the one the record proved current. Only :data:`seg_runtime.extra_files.FROM_LABEL_MAP`.

    Returns:
        The extras written (name -> file).

    Raises:
        CaseError: the input or the label map cannot be read, or they do not share a grid.
    """
    bundle = pipeline.bundle
    image, geometry = read_case(case, bundle.spatial_dims, bundle.in_channels, pipeline.max_bytes,
                                pipeline.allow_gaps)
    labels, label_geometry = read_label_map(target, bundle.spatial_dims)
    if pipeline.value_lut is not None:  # the record says which encoding the file has: back to indices
        labels = remap_values(labels, {int(v): i for i, v in enumerate(pipeline.value_lut)})
    if tuple(label_geometry.shape) != tuple(geometry.shape):
        raise CaseError(f"{target}: shape {tuple(label_geometry.shape)} differs from its input's "
                        f"{tuple(geometry.shape)}; predict it again with --overwrite")
    only = dict.fromkeys(FROM_LABEL_MAP, False) | dict.fromkeys(missing, True)
    loaded = Loaded(None, geometry, None, _preview_copy(image[0]) if only["preview"] else None,
                    source=image if only["statistics"] else None)
    return write_extras(loaded, np.asarray(labels, np.int16), case, target, dataclasses.replace(pipeline, **only))


def write_extras(loaded: Loaded, labels: np.ndarray, case: Case, target: Path,
                 pipeline: CasePipeline) -> dict[str, Path]:
    """The optional outputs: statistics, preview PNG (best effort), DICOM-SEG and RTSTRUCT (DICOM inputs).

    Returns:
        The extras written (name -> file).
    """
    written: dict[str, Path] = {}
    if pipeline.statistics:
        written["statistics"] = _write_statistics(loaded, labels, case, target, pipeline.bundle)
    if pipeline.preview and loaded.first_channel is not None:
        try:
            written["preview"] = write_preview(
                extra_path("preview", target.parent, case.id, pipeline.bundle.spatial_dims),
                loaded.first_channel,
                labels,
                loaded.geometry if labels.ndim == 3 else None,
                names={index: name for name, index in pipeline.bundle.labels.items()},
            )
        except Exception as exc:  # a quick-look picture must never cost the prediction
            logger.warning("case %s: no preview (%s: %s)", case.id, type(exc).__name__, exc)
        loaded.first_channel = None
    if pipeline.dicom_seg or pipeline.rtstruct:
        written.update(_write_dicom(loaded, labels, case, target, pipeline))
    return written


def _write_dicom(loaded: Loaded, labels: np.ndarray, case: Case, target: Path,
                 pipeline: CasePipeline) -> dict[str, Path]:
    """DICOM-SEG and RTSTRUCT of a DICOM series input, referencing its images."""
    if case.kind != "dicom":
        logger.warning("case %s: not a DICOM series input; no DICOM-SEG or RTSTRUCT written", case.id)
        return {}
    volume = labels.reshape(tuple(loaded.geometry.shape))  # a 2D model drops a lone slice axis
    written: dict[str, Path] = {}
    for name, write in (("dicom_seg", write_dicom_seg), ("rtstruct", write_rtstruct)):
        if getattr(pipeline, name):
            path = extra_path(name, target.parent, case.id, pipeline.bundle.spatial_dims)
            write(path, volume, case.paths[0], pipeline.bundle, software_version=pipeline.version)
            written[name] = path
    return written


def _write_statistics(loaded: Loaded, labels: np.ndarray, case: Case, target: Path, bundle: Bundle) -> Path:
    """``OUTPUT/statistics/<case>.json``: every structure's size and the input's intensities inside it."""
    stats = case_statistics(labels, loaded.source, loaded.geometry.spacing, bundle.labels, bundle.regions,
                            bundle.channel_names)
    loaded.source = None
    return write_case_statistics(statistics_path(target.parent, case.id), case.id, stats)


def probability_dtype(num_classes: int, shape: Sequence[int]) -> type:
    """float32 for scores within :data:`PROBABILITY_BUDGET_BYTES`, else float16."""
    size = 4 * num_classes * int(np.prod(shape, dtype=np.int64))
    return np.float32 if size <= PROBABILITY_BUDGET_BYTES else np.float16
