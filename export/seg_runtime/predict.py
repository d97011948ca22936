"""Folder -> folder prediction, composed: a backend, options, a runner; planning and the run record.

``seg-run`` (an :class:`~seg_runtime.session.OnnxBackend`) and ``seg predict`` (a torch backend)
both call :func:`predict_folder`; only the backend differs. The runner decides where the stages
run (this process, Ray Data); what a case goes through is :mod:`seg_runtime.stages`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .backends import Backend
from .dicom_seg import require_highdicom, warn_uncoded_labels
from .manifest import RunManifest
from .options import PredictOptions
from .output_dir import ensure_output_dir
from .planning import manifest_name, plan_cases
from .runners import Runner
from .runners.local import LocalRunner
from .stages import CasePipeline
from .statistics import csv_name, statistics_path, write_run_csv

logger = logging.getLogger(__name__)


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
    pipeline = CasePipeline.resolve(bundle, options, backend.default_batch_size)
    output = ensure_output_dir(output_dir)
    # How the outputs were made, beside what made them.
    model_info = {**backend.describe(), "tta": pipeline.tta, **runner.describe()}
    manifest = RunManifest(output / manifest_name(options.shard), tool=backend.tool, model=model_info)
    try:
        todo = plan_cases(input_path, output, bundle, manifest, shard=options.shard, overwrite=options.overwrite,
                          output_format=options.output_format, statistics=options.statistics)
        if todo:
            runner.run(todo, pipeline, backend, manifest)
    finally:
        manifest.close()
    manifest.write()
    if options.statistics:
        write_statistics_csv(manifest, output)
    return manifest


def write_statistics_csv(manifest: RunManifest, output: Path) -> Path:
    """``OUTPUT/statistics.csv`` (one per shard): the run's ok and skipped cases, streamed from their
    per-case JSON files."""
    cases = (statistics_path(output, str(case["id"])) for case in manifest.iter_cases()
             if case.get("status") in ("ok", "skipped"))
    path, missing = write_run_csv(output / csv_name(manifest.path.name), cases)
    if missing:
        logger.warning("%s: no statistics for %d case(s), e.g. %s", path.name, len(missing), missing[0])
    return path
