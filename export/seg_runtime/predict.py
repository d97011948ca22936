"""Folder -> folder prediction, composed: a backend, options, a runner; planning and the run record.

``seg-run`` (an :class:`~seg_runtime.session.OnnxBackend`) and ``seg predict`` (a torch backend)
both call :func:`predict_folder`; only the backend differs. The runner decides where the stages
run (this process, Ray Data); what a case goes through is :mod:`seg_runtime.stages`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from .backends import Backend
from .bundle import BUNDLE_JSON, BundleError
from .cases import Case
from .dicom_seg import require_highdicom, warn_uncoded_labels
from .extra_files import describe, extras_record
from .manifest import RunManifest
from .options import PredictOptions
from .output_dir import ensure_output_dir, run_lock
from .planning import manifest_name, plan_cases
from .runners import Runner, show_case
from .runners.local import LocalRunner
from .stages import CasePipeline, complete_case, error_message
from .statistics import csv_name, statistics_path, write_run_csv

logger = logging.getLogger(__name__)


def resolve_pipeline(backend: Backend, options: PredictOptions) -> CasePipeline:
    """The run's :class:`CasePipeline`; a bundle the options cannot run is a BundleError naming the model."""
    try:
        return CasePipeline.resolve(backend.bundle, options, backend.default_batch_size)
    except BundleError as exc:  # name the model, as every other bundle error does
        info = backend.describe()
        where = Path(info["bundle"]) / BUNDLE_JSON if info.get("bundle") else info.get("checkpoint", "the model")
        raise BundleError(f"{where}: {exc}") from None


def predict_folder(
    input_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    backend: Backend,
    options: PredictOptions | None = None,
    runner: Runner | None = None,
) -> RunManifest:
    """Predict every case under ``input_path`` into ``output_dir``.

    Each case is isolated: a failure is logged, recorded as ``failed`` with its message and the
    run goes on. Cases whose label file this tool finished (size and checksum as recorded) are
    ``skipped`` unless ``options.overwrite``; any other existing file is predicted again.

    Args:
        input_path: A file or folder of cases (see :func:`seg_runtime.cases.discover_cases`).
        output_dir: Where label maps and the run record go (created if needed).
        backend: The network and its model description (:class:`seg_runtime.backends.Backend`).
        options: The run's options (default: :class:`PredictOptions`'s defaults).
        runner: Where the stages run (default: this process, :class:`LocalRunner`).

    Returns:
        The run manifest: every case was appended to its record file as it ended, and its
        summary file was written at the end.

    Raises:
        DicomSegUnavailable: ``dicom_seg`` without highdicom installed (checked before any case).
        OutputDirError: ``output_dir`` is a file, or cannot be created or written.
        NoCasesError: ``input_path`` holds no cases at all.
        ValueError: An unknown ``output_format`` (or ``png`` for a 3D model).
    """
    options = options or PredictOptions()
    runner = runner or LocalRunner(progress=options.progress)
    bundle = backend.bundle
    if options.dicom_seg:
        require_highdicom()
        warn_uncoded_labels(bundle)
    pipeline = resolve_pipeline(backend, options)
    output = ensure_output_dir(output_dir)
    # How the outputs were made, beside what made them.
    model_info = {**backend.describe(), "tta": pipeline.tta, **runner.describe()}
    manifest = RunManifest(output / manifest_name(options.shard), tool=backend.tool, model=model_info)
    settings = pipeline.output_settings()
    manifest.case_fields = {"model": backend.digest, "settings": settings}
    with run_lock(output, options.shard):
        try:
            plan = plan_cases(input_path, output, bundle, manifest, shard=options.shard,
                              overwrite=options.overwrite, output_format=options.output_format,
                              made_by=(backend.digest, settings), extras=options)
            complete_cases(plan.complete, pipeline, manifest, options.progress)
            if plan.todo:
                runner.run(plan.todo, pipeline, backend, manifest)
        finally:
            manifest.close()
        manifest.write()
        if options.statistics:
            write_statistics_csv(manifest, output)
    return manifest


def complete_cases(cases: list[tuple[Case, Path, list[str]]], pipeline: CasePipeline,
                   manifest: RunManifest, progress: bool = False) -> None:
    """Add the missing extras of finished cases from their label maps (this process, one case at a time).

    Each is recorded as ``skipped`` (its label map kept) with the extras it gained, or as ``failed``
    with the reason they could not be made (the next run predicts it again).
    """
    for case, target, missing in cases:
        start = time.perf_counter()
        try:
            written = complete_case(case, target, missing, pipeline)
        except Exception as exc:  # isolation: one case's extras never stop the run
            message = f"{target.name} kept, but its {describe(missing)} could not be made: {error_message(exc)}"
            logger.error("case %s: %s", case.id, message)
            show_case(manifest.add(case.id, inputs=case.paths, status="failed", error=message,
                                   seconds=time.perf_counter() - start, identity=case.identity), progress)
            continue
        logger.info("case %s: %s kept, %s added", case.id, target.name, describe(written) or "nothing")
        entry = manifest.add(case.id, inputs=case.paths, status="skipped", output=target,
                             seconds=time.perf_counter() - start,
                             extra={"extras": extras_record(written), "completed": sorted(written)})
        show_case(entry, progress)


def write_statistics_csv(manifest: RunManifest, output: Path) -> Path:
    """``OUTPUT/statistics.csv`` (one per shard): the run's ok and skipped cases, streamed from their
    per-case JSON files."""
    cases = (statistics_path(output, str(case["id"])) for case in manifest.iter_cases()
             if case.get("status") in ("ok", "skipped"))
    path, missing = write_run_csv(output / csv_name(manifest.path.name), cases)
    if missing:
        logger.warning("%s: no statistics for %d case(s), e.g. %s", path.name, len(missing), missing[0])
    return path
