"""Folder → folder prediction with per-case isolation, prefetching and a run manifest.

Used by both ``seg-run`` (onnxruntime) and ``seg predict`` (torch): only ``predict_batch``
differs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

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
from .outputs import labels_on_input_grid
from .postprocess import postprocess_labels
from .preprocess import PreprocessState, model_grid_shape, preprocess_image
from .preview import preview_path, write_preview
from .records import CaseState, latest_states, verify_output
from .tiling import PredictBatch, sliding_window_inference

if TYPE_CHECKING:
    from .ray_engine import RayJob

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
    ray: RayJob | None = None,
) -> RunManifest:
    """Predict every case under ``input_path`` into ``output_dir``.

    Each case is isolated: a failure is logged, recorded as ``failed`` with its message and
    the loop goes on. Cases whose label file this tool finished (size and checksum as recorded)
    are ``skipped`` unless ``overwrite``; any other existing file is predicted again. The
    next case is read and preprocessed in a background thread while the current one runs.

    Args:
        input_path: A file or folder of cases (see :func:`discover_cases`).
        output_dir: Where label maps and the manifest go (created if needed).
        bundle: The model description (geometry, preprocessing, patching).
        predict_batch: Logits for a batch of patches. Shape: [B, C, *P] → [B, K, *P].
        tta: Average over mirrorings of every spatial axis.
        overwrite: Re-predict cases whose output exists.
        shard: ``(i, n)``: only cases at sorted positions ``p % n == i``; the records are then
            ``predictions.shard-i-of-n.jsonl`` (and its summary ``.json``).
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
        ray: Run the cases on Ray Data instead of this process (see
            :mod:`seg_runtime.ray_engine`); ``predict_batch`` is then unused: each actor builds
            its own from ``ray.model_factory``.

    Returns:
        The run manifest: every case was appended to its record file as it finished, and its
        summary file was written at the end.

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
    model_info = dict(model_info or {}, tta=bool(tta))  # how the outputs were made, beside what made them
    if ray is not None:
        model_info.update(ray.describe())
    manifest = RunManifest(output / manifest_name(shard), tool=tool, version=version, model=model_info)
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
    try:
        todo = plan_cases(input_path, output, bundle, manifest, shard=shard, overwrite=overwrite,
                          output_format=output_format)
        if ray is None:
            _run_cases(todo, manifest, settings)
        elif todo:
            from .ray_engine import run_on_ray

            run_on_ray(todo, manifest, dataclasses.replace(settings, predict_batch=None, progress=False),
                       ray, progress=progress)
    finally:
        manifest.close()
    manifest.write()
    return manifest


def plan_cases(
    input_path: str | os.PathLike[str],
    output: Path,
    bundle: Bundle,
    manifest: RunManifest,
    *,
    shard: tuple[int, int] | None = None,
    overwrite: bool = False,
    output_format: str = "auto",
) -> list[tuple[Case, Path]]:
    """Discover the cases, keep this shard's, and record those that need no prediction.

    Discovery problems are recorded as failed; a case whose output file this tool finished
    (its record's size and checksum match the file) is recorded as skipped. Everything else
    — no output, an output without a record, a truncated or altered one — is returned to do.

    Returns:
        ``(case, label file)`` pairs to predict, in sorted case order.

    Raises:
        NoCasesError: nothing under ``input_path`` looks like a case.
    """
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
    _record_problems(manifest, select_shard(problems, shard), Path(input_path))
    done = {} if overwrite else latest_states(output)
    return _plan(manifest, select_shard(cases, shard), output, overwrite, done)


def _record_problems(manifest: RunManifest, problems: list[tuple[str, str]], input_path: Path) -> None:
    """Record discovery problems as failed cases."""
    for name, problem in problems:
        logger.error("%s: %s", name, problem)
        where = input_path / name
        manifest.add(name, inputs=[where if where.exists() else input_path], status="failed", error=problem)


def _plan(
    manifest: RunManifest, cases: list[Case], output: Path, overwrite: bool, done: dict[str, CaseState]
) -> list[tuple[Case, Path]]:
    """Pair each case with its label file; record the ones that need no prediction."""
    todo: list[tuple[Case, Path]] = []
    for case in cases:
        target = output / f"{case.id}{case.output_ext}"
        if target.resolve() in {p.resolve() for p in case.paths}:
            error = f"{target}: output would overwrite the input; choose another output folder"
            manifest.add(case.id, inputs=case.paths, status="failed", error=error)
            continue
        if target.exists() and not overwrite:
            state = done.get(case.id)
            distrust = verify_output(state.record if state else None, target)
            if distrust is None:
                manifest.add(case.id, inputs=case.paths, status="skipped", output=target, write=False)
                continue
            logger.warning("case %s: existing %s is not trusted (%s); predicting it again",
                           case.id, target.name, distrust)
        todo.append((case, target))
    return todo


def _run_cases(todo: list[tuple[Case, Path]], manifest: RunManifest, settings: _Settings) -> None:
    """The per-case loop, loading case i+1 in the background while case i is predicted."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="cases", unit="case", disable=not settings.progress or not todo)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="seg-prefetch") as pool:
        pending: Future[_Loaded] | None = pool.submit(load_case, todo[0][0], settings) if todo else None
        for index, (case, target) in enumerate(todo):
            start = time.perf_counter()
            current, pending = (
                pending,
                (pool.submit(load_case, todo[index + 1][0], settings) if index + 1 < len(todo) else None),
            )
            try:
                _predict_case(current.result(), case, target, settings)
            except Exception as exc:  # isolation: one bad case never stops the run
                message = error_message(exc)
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


def error_message(exc: BaseException) -> str:
    """A case's failure as one line: the message of a case error, else type and message."""
    return str(exc) if isinstance(exc, CaseError) else f"{type(exc).__name__}: {exc}"


def load_case(case: Case, settings: _Settings) -> _Loaded:
    """Read and preprocess one case (the prefetch thread's, or a Ray task's, work)."""
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
    """Sliding window, then back to the input grid, post-processing and the writes."""
    finish_case(loaded, infer_case(loaded, settings), case, target, settings)


def infer_case(loaded: _Loaded, settings: _Settings) -> np.ndarray:
    """The network's part: Gaussian sliding window (and mirroring) on the model grid.

    Large volumes blend into float16 (see :func:`probability_dtype`); the model-grid image is
    dropped afterwards.

    Returns:
        Probabilities on the model grid. Shape: [K, *S'].
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
    return probabilities


def finish_case(
    loaded: _Loaded, probabilities: np.ndarray, case: Case, target: Path, settings: _Settings
) -> None:
    """Back to the input grid, post-process, write (extras first, the label file last)."""
    bundle = settings.bundle
    labels, restored = labels_on_input_grid(
        probabilities,
        loaded.state,
        keep_probabilities=settings.save_probabilities,
        paint_labels=bundle.paint_labels,
    )
    del probabilities
    postprocess_labels(labels, bundle.keep_largest, bundle.remove_small, bundle.labels, bundle.regions,
                       voxel_volume=float(np.prod(loaded.geometry.spacing[: bundle.spatial_dims])))
    if restored is not None:
        suffix = ".npz" if bundle.spatial_dims == 2 else ".nii.gz"
        write_probabilities(target.parent / f"{case.id}_probabilities{suffix}", restored, loaded.geometry)
        del restored
    _write_extras(loaded, labels, case, target, settings)
    # The label file is written last, and only its record (with its checksum) marks it done.
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
