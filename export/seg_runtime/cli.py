"""``seg-run``: predict a scan folder with a deploy bundle, without torch."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._version import __version__
from .bundle import BundleError
from .errors import SegError
from .manifest import SUMMARY_NAME, RunManifest, folder_summary
from .options import EXIT_CODES, add_predict_options, ray_options, show_progress, with_keep_largest
from .session import PROVIDERS

_DESCRIPTION = """\
Segment medical images with a seg deploy bundle (model.onnx + model.json) on onnxruntime.

INPUT may be a single image, a folder of images (NIfTI, NRRD, MHA/MHD, PNG, TIFF), nnU-Net
channel files (CASE_0000.nii.gz, CASE_0001.nii.gz, ...), case folders holding the bundle's
channel files, or folders of DICOM series (one series per folder). Each case gets a label
map in OUTPUT in the format and geometry of its input (NRRD -> .nrrd, MHA/MHD -> .mha, NIfTI
and DICOM -> .nii.gz, PNG/TIFF -> .png; see --output-format). OUTPUT/predictions.jsonl records
every case as ok / skipped / failed the moment it ends (append-only; a rerun skips the cases
whose outputs it verifies against their recorded checksums), OUTPUT/predictions.json summarises
the run when it ends, and --summary merges all shards and runs.
"""

_EPILOG = f"""\
{EXIT_CODES}

examples:
  seg-run bundles/brats -i scans/ -o labels/
  seg-run bundles/brats -i scans/ -o labels/ --provider cuda --tta --batch-size 4
  seg-run bundles/brats -i scans/ -o labels/ --shard 0/4   # on four machines: 0/4 .. 3/4
  seg-run --summary -o labels/                               # merged state of all shards
  seg-run bundles/ct -i /shared/scans -o /shared/labels --engine ray --address auto --num-workers 8
  seg-run bundles/ct -i dicom_series/ -o labels/ --preview --dicom-seg
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``seg-run`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="seg-run",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "bundle", type=Path, nargs="?", metavar="BUNDLE_DIR",
        help="folder with model.json and model.onnx (not needed with --summary)"
    )
    parser.add_argument(
        "--provider",
        choices=PROVIDERS,
        default="auto",
        help="onnxruntime execution provider (default: auto = CUDA if available, else CPU; "
        "an unavailable choice falls back to CPU with a warning)",
    )
    add_predict_options(parser)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v: per-case log, -vv: debug")
    parser.add_argument("--version", action="version", version=f"seg-run {__version__}")
    return parser


def _summary(manifest: RunManifest, output: Path) -> str:
    """The short result table printed at the end."""
    counts = manifest.summary
    lines = [
        f"{'ok':<10}{counts['ok']}",
        f"{'skipped':<10}{counts['skipped']}",
        f"{'failed':<10}{counts['failed']}",
        f"{'output':<10}{output}",
        f"{'manifest':<10}{manifest.path}",
    ]
    lines += _failure_lines(manifest.failures(), counts["failed"], "the manifest")
    return "\n".join(lines)


def _failure_lines(failures: list[dict[str, Any]], total: int, where: str, shown: int = 10) -> list[str]:
    """The first ``shown`` failures, one line each, and how many more ``where`` lists."""
    lines = [f"  failed {entry['id']}: {entry['error']}" for entry in failures[:shown]]
    if total > shown:
        lines.append(f"  ... and {total - shown} more (see {where})")
    return lines


def print_folder_summary(output: Path, prog: str) -> int:
    """Print the merged summary of an output folder (exit 1 when a case failed, 2 when none)."""
    if not output.is_dir():
        print(f"{prog}: error: not a folder: {output}", file=sys.stderr)
        return 2
    result = folder_summary(output)
    if not result["cases"]:
        print(f"{prog}: error: {output} holds no prediction records", file=sys.stderr)
        return 2
    counts = result["summary"]
    lines = [f"{'cases':<10}{result['cases']}", f"{'ok':<10}{counts['ok']}", f"{'failed':<10}{counts['failed']}",
             f"{'records':<10}{', '.join(result['record_files']) or '(predictions.json only)'}",
             f"{'summary':<10}{output / SUMMARY_NAME}"]
    lines += _failure_lines(result["failed"], counts["failed"], SUMMARY_NAME)
    print("\n".join(lines))
    return 1 if counts["failed"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``seg-run``; returns the exit status (0 ok, 1 a case failed, 2 usage/bundle error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.summary:
        return print_folder_summary(args.output, "seg-run")
    if args.bundle is None or args.input is None:
        print("seg-run: error: BUNDLE_DIR and -i/--input are required (unless --summary)", file=sys.stderr)
        return 2
    if not args.input.exists():
        print(f"seg-run: error: input not found: {args.input}", file=sys.stderr)
        return 2
    from .dicom_seg import DicomSegUnavailable, require_highdicom
    from .session import OnnxPredictor

    try:
        if args.dicom_seg:
            require_highdicom()
        if args.engine == "ray":
            from .ray_engine import require_ray

            require_ray()  # before loading the model, not after the first case
        predictor = OnnxPredictor(args.bundle, provider=args.provider, threads=args.threads)
        predictor.bundle = with_keep_largest(predictor.bundle, args.keep_largest)
    except (BundleError, DicomSegUnavailable, SegError, OSError, ValueError) as exc:
        print(f"seg-run: error: {exc}", file=sys.stderr)
        return 2
    from tqdm.contrib.logging import logging_redirect_tqdm

    engine = {"engine": "ray", "ray_options": ray_options(args)} if args.engine == "ray" else {}
    # Log lines go through tqdm.write so they do not tear the progress bars.
    try:
        with logging_redirect_tqdm():
            manifest = predictor.predict_folder(
                args.input,
                args.output,
                **engine,
                tta=predictor.bundle.tta if args.tta is None else args.tta,
                overwrite=args.overwrite,
                shard=args.shard,
                save_probabilities=args.save_probabilities,
                batch_size=args.batch_size or 1,
                progress=show_progress(args),
                preview=args.preview,
                dicom_seg=args.dicom_seg,
                output_format=args.output_format,
                max_memory_gb=args.max_memory,
            )
    except (SegError, ValueError) as exc:  # output folder, empty input, settings: one line, no traceback
        if args.verbose > 1:
            logging.getLogger(__name__).debug("traceback", exc_info=True)
        print(f"seg-run: error: {exc}", file=sys.stderr)
        return 2
    print(_summary(manifest, args.output))
    return 1 if manifest.summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
