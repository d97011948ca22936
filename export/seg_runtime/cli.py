"""``seg-run``: predict a scan folder with a deploy bundle, without torch."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._version import __version__
from .errors import SegError
from .manifest import SUMMARY_NAME, RunManifest, folder_summary
from .session import PROVIDERS

_DESCRIPTION = """\
Segment medical images with a seg deploy bundle (model.onnx + model.json) on onnxruntime.

INPUT may be a single image, a folder of images (NIfTI, NRRD, MHA/MHD, PNG, TIFF), nnU-Net
channel files (CASE_0000.nii.gz, CASE_0001.nii.gz, ...), case folders holding the bundle's
channel files, or folders of DICOM series (one series per folder). Each case gets a label
map in OUTPUT with the geometry of its input (.nii.gz, or .png for 2D PNG/TIFF inputs), and
OUTPUT/predictions.jsonl records every case as ok / skipped / failed the moment it ends (append-
only; a rerun skips the cases whose outputs it verifies against their recorded checksums), and
OUTPUT/predictions.json summarises the run when it ends; --summary merges all shards and runs.
"""

_EPILOG = """\
exit status: 0 all cases ok or skipped, 1 some case failed, 2 usage or bundle error.

examples:
  seg-run bundles/brats -i scans/ -o labels/
  seg-run bundles/brats -i scans/ -o labels/ --provider cuda --tta --batch-size 4
  seg-run bundles/brats -i scans/ -o labels/ --shard 0/4   # on four machines: 0/4 .. 3/4
  seg-run --summary -o labels/                               # merged state of all shards
  seg-run bundles/ct -i dicom_series/ -o labels/ --preview --dicom-seg
"""


def _shard(text: str) -> tuple[int, int]:
    """Parse ``i/n`` (0-based)."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n like 0/4, got '{text}'") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"need 0 <= i < n, got '{text}'")
    return index, count


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``seg-run`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="seg-run",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "bundle", type=Path, nargs="?", metavar="BUNDLE_DIR", help="folder with model.json and model.onnx"
    )
    parser.add_argument("-i", "--input", type=Path, help="image file or folder of cases")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="folder for label maps and the manifest"
    )
    parser.add_argument(
        "--summary",
        action="store_true",
        help="only print the merged state of every case in OUTPUT over all shards and runs "
        "(and write OUTPUT/summary.json); needs no bundle or input",
    )
    parser.add_argument(
        "--provider",
        choices=PROVIDERS,
        default="auto",
        help="onnxruntime execution provider (default: auto = CUDA if available, else CPU; "
        "an unavailable choice falls back to CPU with a warning)",
    )
    parser.add_argument(
        "--tta", action="store_true", help="mirror test-time augmentation over all spatial axes"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="re-predict cases whose output already exists"
    )
    parser.add_argument(
        "--shard",
        type=_shard,
        metavar="i/n",
        help="only cases at sorted positions p with p %% n == i (0-based); n runs partition the cases",
    )
    parser.add_argument(
        "--save-probabilities",
        action="store_true",
        help="also write <case>_probabilities.nii.gz (3D, uint8 scaled to [0,1]) or .npz (2D, float16)",
    )
    parser.add_argument(
        "--keep-largest",
        nargs="*",
        metavar="NAME",
        help="keep only the largest connected component of these classes/regions "
        "(default: the bundle's keep_largest; the flag alone turns it off)",
    )
    parser.add_argument(
        "--batch-size", type=_positive, default=1, metavar="N", help="patches per model call (default 1)"
    )
    parser.add_argument(
        "--preview",
        action="store_true",
        help="also write OUTPUT/preview/<case>.png: 3 axial slices (2D: the image) with the labels in colour",
    )
    parser.add_argument(
        "--dicom-seg",
        action="store_true",
        help="also write <case>.seg.dcm (DICOM-SEG) for DICOM series inputs (needs: pip install highdicom)",
    )
    parser.add_argument(
        "--threads",
        type=_positive,
        metavar="N",
        help="CPU threads for onnxruntime (default: the physical cores)",
    )
    add_engine_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v: per-case log, -vv: debug")
    parser.add_argument("--version", action="version", version=f"seg-run {__version__}")
    return parser


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got '{text}'")
    return value


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """``--engine local|ray`` and the Ray options (shared by ``seg-run`` and ``seg predict``)."""
    group = parser.add_argument_group("distributed inference (Ray Data; pip install \"seg-runtime[ray]\")")
    group.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: this process (default); ray: read/preprocess as Ray tasks, the model "
                       "in a pool of actors, writes as tasks")
    group.add_argument("--address", metavar="ADDR",
                       help="Ray cluster: auto (the cluster this machine is part of) or ray://HEAD:10001; "
                       "default: start a local Ray on this machine")
    group.add_argument("--num-workers", type=_positive, default=1, metavar="N",
                       help="model actors, each loading the model once (default 1)")
    group.add_argument("--gpus-per-worker", type=_fraction, default=0.0, metavar="F",
                       help="GPUs per actor; fractions share a GPU, e.g. 0.25 (default 0)")
    group.add_argument("--cpus-per-worker", type=_fraction, default=1.0, metavar="F",
                       help="CPUs reserved per actor (default 1)")


def ray_options(args: argparse.Namespace) -> Any:
    """The parsed engine options as :class:`seg_runtime.ray_engine.RayOptions`."""
    from .ray_engine import RayOptions

    return RayOptions(address=args.address, num_workers=args.num_workers,
                      gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker)


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
    for entry in manifest.failures()[:10]:
        lines.append(f"  failed {entry['id']}: {entry['error']}")
    if counts["failed"] > 10:
        lines.append(f"  ... and {counts['failed'] - 10} more (see the manifest)")
    return "\n".join(lines)


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
    lines += [f"  failed {entry['id']}: {entry['error']}" for entry in result["failed"][:10]]
    if counts["failed"] > 10:
        lines.append(f"  ... and {counts['failed'] - 10} more (see {SUMMARY_NAME})")
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
    from .dicom_seg import require_highdicom
    from .session import OnnxPredictor

    try:
        if args.dicom_seg:
            require_highdicom()
        if args.engine == "ray":
            from .ray_engine import require_ray

            require_ray()  # before loading the model, not after the first case
        predictor = OnnxPredictor(args.bundle, provider=args.provider, threads=args.threads)
        if args.keep_largest is not None:
            predictor.bundle = dataclasses.replace(predictor.bundle, keep_largest=args.keep_largest)
    except (SegError, OSError, ValueError) as exc:
        print(f"seg-run: error: {exc}", file=sys.stderr)
        return 2
    try:
        manifest = _predict(predictor, args)
    except SegError as exc:  # e.g. no Ray cluster at --address
        print(f"seg-run: error: {exc}", file=sys.stderr)
        return 2
    print(_summary(manifest, args.output))
    return 1 if manifest.summary["failed"] else 0


def _predict(predictor: Any, args: argparse.Namespace) -> RunManifest:
    from tqdm.contrib.logging import logging_redirect_tqdm

    options = {}
    if args.engine == "ray":
        options = {"engine": "ray", "ray_options": ray_options(args)}
    # Log lines go through tqdm.write so they do not tear the progress bars.
    with logging_redirect_tqdm():
        manifest = predictor.predict_folder(
            args.input,
            args.output,
            **options,
            tta=args.tta,
            overwrite=args.overwrite,
            shard=args.shard,
            save_probabilities=args.save_probabilities,
            batch_size=args.batch_size,
            progress=not args.no_progress and sys.stderr.isatty(),
            preview=args.preview,
            dicom_seg=args.dicom_seg,
        )
    return manifest


if __name__ == "__main__":
    sys.exit(main())
