"""``seg-run``: the torch-free runtime's command line, one subcommand per way of running a bundle.

``seg-run predict BUNDLE -i IN -o OUT`` predicts a scan folder; ``seg-run summary -o OUT`` prints
the merged state of an output folder; ``seg-run serve BUNDLE ...`` serves bundles over HTTP
(:mod:`seg_runtime.serve`); ``seg-run listen`` is a DICOM node and ``seg-run pull`` retrieves a study
from a PACS (:mod:`seg_runtime.cli_dicom`). The form without a subcommand (``seg-run BUNDLE -i IN -o
OUT``, ``seg-run --summary -o OUT``) is ``predict``, as before subcommands existed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ._version import __version__
from .cli_dicom import add_listen, add_pull
from .cli_options import EXIT_CODES, add_predict_options, predict_options, preflight, runner_from_args
from .errors import SegError, one_line
from .install_check import duplicate_runtime
from .manifest import folder_summary
from .serve.command import add_serve_parser
from .session import PROVIDERS
from .summary import folder_summary_text, run_summary

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
  seg-run predict bundles/brats -i scans/ -o labels/
  seg-run predict bundles/brats -i scans/ -o labels/ --provider cuda --tta --batch-size 4
  seg-run predict bundles/brats -i scans/ -o labels/ --shard 0/4   # on four machines: 0/4 .. 3/4
  seg-run summary -o labels/                                         # merged state of all shards
  seg-run predict bundles/ct -i /shared/scans -o /shared/labels --engine ray --address auto --num-workers 8
  seg-run predict bundles/ct -i dicom_series/ -o labels/ --preview --dicom-seg
  seg-run bundles/brats -i scans/ -o labels/                         # the same as seg-run predict
  seg-run listen bundles/brain --store /var/lib/seg --send-to ORTHANC@127.0.0.1:4242   # a DICOM node
"""

SUBCOMMANDS = ("predict", "summary", "serve", "listen", "pull")


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v: per-case log, -vv: debug")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("predict", help="predict label maps for a scan folder", description=_DESCRIPTION,
                            epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, nargs="?", metavar="BUNDLE_DIR",
                        help="folder with model.json and model.onnx (not needed with --summary)")
    parser.add_argument("--provider", choices=PROVIDERS, default="auto",
                        help="onnxruntime execution provider (default: auto = CUDA if available, else CPU; "
                        "an unavailable choice falls back to CPU with a warning)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a bundle whose model.json lists no file hashes (bundles exported before "
                        "they existed; by default they run with a warning)")
    add_predict_options(parser)
    _add_verbosity(parser)
    parser.set_defaults(func=cmd_predict)


def _add_summary(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("summary", help="the merged state of an output folder over all shards and runs",
                            description="Print the merged state of every case in OUTPUT over all shards and "
                            "runs, and write OUTPUT/summary.json.", epilog=EXIT_CODES)
    parser.add_argument("-o", "--output", type=Path, required=True, help="a prediction output folder")
    _add_verbosity(parser)
    parser.set_defaults(func=lambda args: print_folder_summary(args.output, "seg-run"))


def build_parser() -> argparse.ArgumentParser:
    """The ``seg-run`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="seg-run", description=_DESCRIPTION.splitlines()[0], epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"seg-run {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_predict(sub)
    _add_summary(sub)
    add_serve_parser(sub)
    add_listen(sub)
    add_pull(sub)
    return parser


def _with_subcommand(argv: list[str]) -> list[str]:
    """``seg-run BUNDLE ...`` and ``seg-run --summary ...`` mean ``seg-run predict ...``."""
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help", "--version"):
        return ["predict", *argv]
    return argv


def print_folder_summary(output: Path, prog: str) -> int:
    """Print the merged summary of an output folder (exit 1 when a case failed, 2 when none)."""
    if not output.is_dir():
        print(f"{prog}: error: not a folder: {output}", file=sys.stderr)
        return 2
    result = folder_summary(output)
    if not result["cases"]:
        print(f"{prog}: error: {output} holds no prediction records", file=sys.stderr)
        return 2
    print(folder_summary_text(result, output))
    return 1 if result["summary"]["failed"] else 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``seg-run predict``: load the bundle once, predict the folder, print the summary."""
    if args.summary:
        return print_folder_summary(args.output, "seg-run")
    from .predict import predict_folder
    from .session import OnnxBackend

    preflight(args, args.bundle, "BUNDLE_DIR", "seg-runtime")
    backend = OnnxBackend(args.bundle, provider=args.provider, threads=args.threads, strict=args.strict,
                          expect_sha256=args.expect_sha256)
    from tqdm.contrib.logging import logging_redirect_tqdm

    start = time.perf_counter()
    with logging_redirect_tqdm():  # log lines go through tqdm.write and do not tear the bars
        manifest = predict_folder(args.input, args.output, backend, predict_options(args), runner_from_args(args))
    print(run_summary(manifest, args.output, time.perf_counter() - start))
    return 1 if manifest.summary["failed"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``seg-run``; returns the exit status (0 ok, 1 a case failed, 2 usage/bundle error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(_with_subcommand(list(sys.argv[1:] if argv is None else argv)))
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(f"seg-run: error: a command is required ({', '.join(SUBCOMMANDS)})", file=sys.stderr)
        return 2
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if (duplicate := duplicate_runtime()) is not None:
        logging.getLogger(__name__).warning(duplicate)
    try:
        return int(args.func(args) or 0)
    except (SegError, OSError, ValueError) as exc:  # bundle, output folder, disk, settings: one line
        if args.verbose > 1:
            logging.getLogger(__name__).debug("traceback", exc_info=True)
        print(f"seg-run: error: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
