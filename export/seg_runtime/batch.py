"""Folder → folder prediction with per-case isolation, prefetching and a run manifest.

Used by both ``seg-run`` (onnxruntime) and ``seg predict`` (torch): only ``predict_batch``
differs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ._version import __version__
from .bundle import Bundle
from .cases import Case, NoCasesError, apply_output_format, discover_cases
from .dicom_seg import DICOM_SEG_SUFFIX, require_highdicom, warn_uncoded_labels, write_dicom_seg
from .formats import IMAGE_SUFFIXES
from .geometry import CaseError, Geometry
from .io import read_case, write_labels, write_probabilities
from .limits import check_model_grid, max_memory_bytes
from .manifest import MANIFEST_NAME, RunManifest
from .output_dir import ensure_output_dir
from .outputs import REGION_THRESHOLD
from .postprocess import keep_largest_components
from .preprocess import PreprocessState, model_grid_shape, preprocess_image, restore_to_input
from .preview import preview_path, write_preview
from .tiling import PredictBatch, sliding_window_inference

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Model-grid probabilities up to this size stay float32; larger ones are held in float16 (half
# the memory, values rounded once to within 5e-4, which moves only near-tie voxels' labels).
PROBABILITY_BUDGET_BYTES = 512 * 2**20


@dataclass
class _Loaded:
    """A case read and preprocessed (the prefetch thread's product)."""

    image: np.ndarray | None
    geometry: Geometry
    state: PreprocessState
    first_channel: np.ndarray | None = None  # the raw first channel (float16), for the preview


@dataclass
class _Settings:
    bundle: Bundle
    predict_batch: PredictBatch
    mirror_axes: tuple[int, ...] | None
    batch_size: int
    save_probabilities: bool
    progress: bool
    preview: bool = False
    dicom_seg: bool = False
    version: str = __version__
    max_bytes: int | None = None  # the memory limit per case (see seg_runtime.limits)


def select_shard(items: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """Items at sorted positions ``p`` with ``p % n == i`` for ``shard = (i, n)``.

    The ``n`` shards partition ``items`` exactly; ``None`` keeps everything.
    """
    if shard is None:
        return list(items)
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
    return [item for position, item in enumerate(items) if position % count == index]


def manifest_name(shard: tuple[int, int] | None) -> str:
    """``predictions.json``, or one file per shard so parallel shards never overwrite each other."""
    return MANIFEST_NAME if shard is None else f"predictions.shard-{shard[0]}-of-{shard[1]}.json"


def predict_folder(
    input_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    bundle: Bundle,
    predict_batch: PredictBatch,
    tta: bool = False,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
    save_probabilities: bool = False,
    tool: str = "seg-run",
    model_info: dict[str, Any] | None = None,
    batch_size: int = 1,
    progress: bool = True,
    version: str = __version__,
    preview: bool = False,
    dicom_seg: bool = False,
    output_format: str = "auto",
    max_memory_gb: float | None = None,
) -> RunManifest:
    """Predict every case under ``input_path`` into ``output_dir``.

    Each case is isolated: a failure is logged, recorded as ``failed`` with its message and
    the loop goes on. Cases whose label file exists are ``skipped`` unless ``overwrite``. The
    next case is read and preprocessed in a background thread while the current one runs.

    Args:
        input_path: A file or folder of cases (see :func:`discover_cases`).
        output_dir: Where label maps and the manifest go (created if needed).
        bundle: The model description (geometry, preprocessing, patching).
        predict_batch: Logits for a batch of patches. Shape: [B, C, *P] → [B, K, *P].
        tta: Average over mirrorings of every spatial axis.
        overwrite: Re-predict cases whose output exists.
        shard: ``(i, n)``: only cases at sorted positions ``p % n == i``; the manifest is then
            ``predictions.shard-i-of-n.json``.
        save_probabilities: Also write ``<id>_probabilities.nii.gz`` (3D) / ``.npz`` (2D).
        tool: Tool name recorded in the manifest.
        model_info: Model description recorded in the manifest.
        batch_size: Patches per ``predict_batch`` call.
        progress: Show progress bars.
        version: Tool version recorded in the manifest.
        preview: Also write ``OUTPUT/preview/<id>.png``: a few slices with the labels coloured
            over the first channel (see :mod:`seg_runtime.preview`).
        dicom_seg: Also write ``<id>.seg.dcm`` (DICOM-SEG referencing the source series) for
            DICOM series inputs; needs highdicom.
        output_format: Label-map format (see :data:`seg_runtime.formats.OUTPUT_FORMATS`):
            ``auto`` writes each case in its input's format (DICOM -> NIfTI).
        max_memory_gb: Memory limit per case in GiB (None: ``$SEG_MAX_MEMORY_GB`` or half the
            RAM); a case whose header or resampled grid needs more fails before allocating.

    Returns:
        The run manifest (already written).

    Raises:
        DicomSegUnavailable: ``dicom_seg`` without highdicom installed (checked before any case).
        OutputDirError: ``output_dir`` is a file, or cannot be created or written.
        NoCasesError: ``input_path`` holds no cases at all.
        ValueError: An unknown ``output_format`` (or ``png`` for a 3D model).
    """
    if dicom_seg:
        require_highdicom()
        warn_uncoded_labels(bundle)
    max_bytes = max_memory_bytes(max_memory_gb)
    output = ensure_output_dir(output_dir)
    cases, problems = discover_cases(
        input_path,
        spatial_dims=bundle.spatial_dims,
        in_channels=bundle.in_channels,
        channel_files=bundle.channel_files,
        exclude=[output],
    )
    if not cases and not problems:
        raise NoCasesError(
            f"{input_path}: no cases found (expected image files {', '.join(IMAGE_SUFFIXES)}, "
            "nnU-Net channel files, case folders or DICOM series folders)"
        )
    apply_output_format(cases, output_format, bundle.spatial_dims)
    manifest = RunManifest(output / manifest_name(shard), tool=tool, version=version, model=model_info)
    _record_problems(manifest, select_shard(problems, shard), Path(input_path))
    todo = _plan(manifest, select_shard(cases, shard), output, overwrite)
    manifest.write()
    mirror_axes = tuple(range(bundle.spatial_dims)) if tta else None
    settings = _Settings(
        bundle,
        predict_batch,
        mirror_axes,
        batch_size,
        save_probabilities,
        progress,
        preview,
        dicom_seg,
        version,
        max_bytes,
    )
    _run_cases(todo, manifest, settings)
    return manifest


def _record_problems(manifest: RunManifest, problems: list[tuple[str, str]], input_path: Path) -> None:
    """Record discovery problems as failed cases."""
    for name, problem in problems:
        logger.error("%s: %s", name, problem)
        where = input_path / name
        manifest.add(
            name,
            inputs=[where if where.exists() else input_path],
            status="failed",
            error=problem,
            write=False,
        )


def _plan(manifest: RunManifest, cases: list[Case], output: Path, overwrite: bool) -> list[tuple[Case, Path]]:
    """Pair each case with its label file; record the ones that need no prediction."""
    todo: list[tuple[Case, Path]] = []
    for case in cases:
        target = output / f"{case.id}{case.output_ext}"
        if target.resolve() in {p.resolve() for p in case.paths}:
            error = f"{target}: output would overwrite the input; choose another output folder"
            manifest.add(case.id, inputs=case.paths, status="failed", error=error, write=False)
        elif target.exists() and not overwrite:
            manifest.add(case.id, inputs=case.paths, status="skipped", output=target, write=False)
        else:
            todo.append((case, target))
    return todo


def _run_cases(todo: list[tuple[Case, Path]], manifest: RunManifest, settings: _Settings) -> None:
    """The per-case loop, loading case i+1 in the background while case i is predicted."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="cases", unit="case", disable=not settings.progress or not todo)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="seg-prefetch") as pool:
        pending: Future[_Loaded] | None = pool.submit(_load, todo[0][0], settings) if todo else None
        for index, (case, target) in enumerate(todo):
            start = time.perf_counter()
            current, pending = (
                pending,
                (pool.submit(_load, todo[index + 1][0], settings) if index + 1 < len(todo) else None),
            )
            try:
                _predict_case(current.result(), case, target, settings)
            except Exception as exc:  # isolation: one bad case never stops the run
                message = str(exc) if isinstance(exc, CaseError) else f"{type(exc).__name__}: {exc}"
                logger.error(
                    "case %s failed: %s", case.id, message, exc_info=logger.isEnabledFor(logging.DEBUG)
                )
                seconds = time.perf_counter() - start
                manifest.add(case.id, inputs=case.paths, status="failed", error=message, seconds=seconds)
            else:
                seconds = time.perf_counter() - start
                logger.info("case %s: ok in %.2fs -> %s", case.id, seconds, target)
                manifest.add(case.id, inputs=case.paths, status="ok", output=target, seconds=seconds)
            finally:
                current = None  # drop the finished case before the next one arrives
            bar.update(1)
            bar.set_postfix(case=case.id, s=f"{time.perf_counter() - start:.1f}")
    bar.close()


def _load(case: Case, settings: _Settings) -> _Loaded:
    """Read and preprocess one case (runs in the prefetch thread)."""
    bundle = settings.bundle
    image, geometry = read_case(case, bundle.spatial_dims, bundle.in_channels, settings.max_bytes)
    grid = model_grid_shape(tuple(image.shape[1:]), geometry, bundle.preprocess)
    check_model_grid(case.paths[0], grid, bundle.in_channels, bundle.output_channels, settings.max_bytes)
    first = _preview_copy(image[0]) if settings.preview else None
    prepared, state = preprocess_image(image, geometry, bundle.preprocess)
    return _Loaded(prepared, geometry, state, first)


def _preview_copy(channel: np.ndarray) -> np.ndarray:
    """The first channel in float16 for the preview: half the memory, plenty for 8-bit display."""
    limit = float(np.finfo(np.float16).max)
    return np.clip(channel, -limit, limit, out=np.empty(channel.shape, np.float16), casting="same_kind")


def _predict_case(loaded: _Loaded, case: Case, target: Path, settings: _Settings) -> None:
    """Sliding window → back to the input grid → post-process → write (extras first, labels last).

    Large volumes blend into float16 (see :func:`probability_dtype`), and the model-grid image
    is dropped before the probabilities are restored to the input grid.
    """
    bundle = settings.bundle
    probabilities = sliding_window_inference(
        loaded.image,
        settings.predict_batch,
        bundle.patch_size,
        num_classes=bundle.output_channels,
        overlap=bundle.overlap,
        batch_size=settings.batch_size,
        mirror_axes=settings.mirror_axes,
        progress=settings.progress,
        dtype=probability_dtype(bundle.output_channels, loaded.image.shape[1:]),
        activation="sigmoid" if bundle.outputs == "regions" else "softmax",
    )
    loaded.image = None
    labels, restored = labels_on_input_grid(
        probabilities,
        loaded.state,
        keep_probabilities=settings.save_probabilities,
        paint_labels=bundle.paint_labels,
    )
    del probabilities
    if bundle.keep_largest:
        keep_largest_components(labels, bundle.keep_largest, bundle.labels, bundle.regions)
    if restored is not None:
        suffix = ".npz" if bundle.spatial_dims == 2 else ".nii.gz"
        write_probabilities(target.parent / f"{case.id}_probabilities{suffix}", restored, loaded.geometry)
        del restored
    _write_extras(loaded, labels, case, target, settings)
    # The label file is written last: its existence marks the case as done.
    write_labels(target, labels, loaded.geometry)


def _write_extras(loaded: _Loaded, labels: np.ndarray, case: Case, target: Path, settings: _Settings) -> None:
    """The optional outputs: preview PNG (best effort) and DICOM-SEG (for DICOM inputs)."""
    if settings.preview and loaded.first_channel is not None:
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
    if settings.dicom_seg:
        if case.kind != "dicom":
            logger.warning("case %s: not a DICOM series input; no DICOM-SEG written", case.id)
            return
        write_dicom_seg(
            target.parent / f"{case.id}{DICOM_SEG_SUFFIX}",
            labels.reshape(tuple(loaded.geometry.shape)),  # a 2D model drops a lone slice axis
            case.paths[0],
            settings.bundle,
            software_version=settings.version,
        )


def probability_dtype(num_classes: int, shape: Sequence[int]) -> type:
    """float32 for probabilities within :data:`PROBABILITY_BUDGET_BYTES`, else float16."""
    size = 4 * num_classes * int(np.prod(shape, dtype=np.int64))
    return np.float32 if size <= PROBABILITY_BUDGET_BYTES else np.float16


def labels_on_input_grid(
    probabilities: np.ndarray,
    state: PreprocessState,
    *,
    keep_probabilities: bool = False,
    paint_labels: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Restore probabilities to the input grid one channel at a time and decode the labels.

    Class outputs take the argmax; region outputs (``paint_labels`` given) paint each region's
    label where its probability is > 0.5, in channel order (see :mod:`seg_runtime.outputs`).
    Only one restored channel plus the running maximum are held at once (in the dtype of
    ``probabilities``), and a float16 copy of all channels when ``keep_probabilities``.

    Args:
        probabilities: Probabilities on the model grid, float32 or float16. Shape: [K, *S'].
        state: From :func:`preprocess_image`.
        keep_probabilities: Also return the restored probabilities.
        paint_labels: For region outputs, the label each channel paints. Length K.

    Returns:
        The label map (Shape: [*S_in], uint8 or uint16) and the float16 probabilities
        (Shape: [K, *S_in]) or None.
    """
    channels = probabilities.shape[0]
    kept = np.empty((channels, *state.input_shape), np.float16) if keep_probabilities else None
    largest = max(paint_labels) + 1 if paint_labels is not None else channels
    labels = np.zeros(state.input_shape, dtype=np.uint8 if largest <= 256 else np.uint16)
    best: np.ndarray | None = None
    for index in range(channels):
        restored = restore_to_input(probabilities[index : index + 1], state)[0]
        if kept is not None:
            kept[index] = restored
        if paint_labels is not None:
            labels[restored > REGION_THRESHOLD] = paint_labels[index]
            continue
        if best is None:
            best = restored
            continue
        better = restored > best  # strict: ties keep the lower class, like np.argmax
        labels[better] = index
        np.maximum(best, restored, out=best)
    return labels, kept
