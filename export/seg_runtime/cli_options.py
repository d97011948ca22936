"""The prediction command line shared by ``seg-run`` and ``seg predict``: one definition, one help,
one mapping onto :class:`~seg_runtime.options.PredictOptions` and a runner, one pre-flight.

Both CLIs call :func:`add_predict_options`, so a flag means the same thing in either tool, and
:func:`preflight` before they load a model, so a missing input or extra fails at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import SegError
from .formats import OUTPUT_FORMATS
from .limits import MEMORY_ENV, parse_memory_gb
from .options import PredictOptions

EXIT_CODES = "exit status: 0 all cases ok or skipped, 1 some case failed, 2 usage, input or model error."


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``i/n`` (0-based) for ``--shard``."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n like 0/4, got '{text}'") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"need 0 <= i < n, got '{text}'")
    return index, count


def parse_positive(text: str) -> int:
    """A positive integer (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def add_predict_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of a folder prediction run to ``parser`` (``-i``/``-o`` and the rest).

    ``--batch-size`` defaults to None (the model's own default); ``--keep-largest`` to None
    (the model's setting).
    """
    add = parser.add_argument
    add("-i", "--input", type=Path, help="image file or folder of cases (required unless --summary)")
    add("-o", "--output", type=Path, required=True, help="folder for label maps and the manifest")
    add("--summary", action="store_true",
        help="only print the merged state of every case in OUTPUT over all shards and runs (and write "
        "OUTPUT/summary.json)")
    add("--tta", action=argparse.BooleanOptionalAction, default=None,
        help="mirroring test-time augmentation over all spatial axes (2^dims network passes per patch); "
        "default: the model's setting (seg auto plans it on, as nnU-Net)")
    add("--overwrite", action="store_true", help="re-predict cases whose output already exists")
    add("--shard", type=parse_shard, metavar="i/n",
        help="only cases at sorted positions p with p %% n == i (0-based); n runs partition the cases")
    add("--save-probabilities", action="store_true",
        help="also write <case>_probabilities.nii.gz (3D, uint8 scaled to [0,1]) or .npz (2D, float16)")
    add("--keep-largest", nargs="*", metavar="NAME",
        help="keep only the largest connected component of these classes/regions "
        "(default: the model's keep_largest; the flag alone turns off all post-processing, the model's "
        "remove_small included)")
    add("--batch-size", type=parse_positive, metavar="N",
        help="patches per model call (default: seg-run 1, seg predict the config's infer.batch_size)")
    add("--preview", action="store_true",
        help="also write OUTPUT/preview/<case>.png: 3 axial slices (2D: the image) with the labels in colour, "
        "the slice index, the patient's directions and a legend of the class names")
    add("--dicom-seg", action="store_true",
        help="also write <case>.seg.dcm (DICOM-SEG) for DICOM series inputs (needs highdicom: "
        "pip install \"seg-runtime[dicom]\" or \"seg[dicom]\")")
    add("--rtstruct", action="store_true",
        help="also write <case>.rtstruct.dcm (RT Structure Set: closed planar contours per slice, one ROI per "
        "class and region) for DICOM series inputs")
    add("--statistics", action="store_true",
        help="also write per-structure volume (ml), voxel count and the input's mean/std/percentiles inside "
        "each class and region: OUTPUT/statistics/<case>.json and OUTPUT/statistics.csv over the run")
    add("--threads", type=parse_positive, metavar="N", help="CPU threads (default: the physical cores)")
    add("--no-progress", action="store_true",
        help="hide progress bars (they are off anyway when stderr is not a terminal)")
    add("--output-format", choices=OUTPUT_FORMATS, default="auto",
        help="label map format (default auto: the input's format, NRRD -> .nrrd, MHA/MHD -> .mha, NIfTI and "
        "DICOM -> .nii.gz, PNG/TIFF -> .png)")
    add("--class-indices", action="store_true",
        help="write label maps as class indices 0..K-1 (default: each class's value in the dataset's label files, "
        "the model's label_values, e.g. 255 for ISBI's interior; uint16 above 255)")
    add("--allow-gaps", action="store_true",
        help="accept DICOM series whose slices are unevenly spaced (a missing slice), resampled onto an even "
        "grid at the median gap (default: such a series fails, naming its folder)")
    add("--expect-sha256", metavar="HEX",
        help="refuse to run unless the model's SHA-256 is this one (seg-run: the bundle's, printed at the end of "
        "every run; seg predict: the checkpoint's): pins a deployment to the model it was validated with")
    add("--max-memory", type=parse_memory_gb, metavar="GB",
        help="memory for the data a run holds beyond the loaded model: the image as read, the model grid, the "
        "blended scores, the restored label map, and the next case read ahead (which only gets what the current "
        "case leaves). A case that cannot fit is refused up front with the figure it needs; with --engine ray "
        f"the limit is per worker process (default: ${MEMORY_ENV}, else half the RAM)")
    add_engine_options(parser)
    return parser


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars unless ``--no-progress`` or stderr is not a terminal (logs, CI, pipes)."""
    return not args.no_progress and sys.stderr.isatty()


def number_type(low: float, *, strict: bool = False, integer: bool = False) -> Callable[[str], Any]:
    """An argparse type for numbers ``>= low`` (``> low`` when ``strict``), integers when ``integer``."""
    kind = "an integer" if integer else "a number"

    def parse(text: str) -> Any:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            value = None
        if value is None or value < low or (strict and value == low) or value != value:
            raise argparse.ArgumentTypeError(f"expected {kind} {'>' if strict else '>='} {low:g}, got '{text}'")
        return value

    return parse


_fraction = number_type(0)


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """``--engine local|ray`` and the Ray options (shared by ``seg-run`` and ``seg predict``)."""
    group = parser.add_argument_group("distributed inference (Ray Data; pip install \"seg-runtime[ray]\")")
    group.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: this process (default); ray: read/preprocess as Ray tasks, the model "
                       "in a pool of actors, writes as tasks")
    group.add_argument("--address", metavar="ADDR",
                       help="Ray cluster: auto (the cluster this machine is part of) or ray://HEAD:10001; "
                       "default: start a local Ray on this machine")
    group.add_argument("--num-workers", type=parse_positive, default=1, metavar="N",
                       help="model actors, each loading the model once (default 1)")
    group.add_argument("--gpus-per-worker", type=_fraction, default=0.0, metavar="F",
                       help="GPUs per actor; fractions share a GPU, e.g. 0.25 (default 0)")
    group.add_argument("--cpus-per-worker", type=_fraction, default=1.0, metavar="F",
                       help="CPUs reserved per actor (default 1)")


def predict_options(args: argparse.Namespace) -> PredictOptions:
    """The parsed prediction options of either CLI as :class:`PredictOptions`."""
    return PredictOptions(
        tta=args.tta,
        keep_largest=None if args.keep_largest is None else tuple(args.keep_largest),
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        shard=args.shard,
        save_probabilities=args.save_probabilities,
        preview=args.preview,
        dicom_seg=args.dicom_seg,
        rtstruct=args.rtstruct,
        statistics=args.statistics,
        output_format=args.output_format,
        max_memory_gb=args.max_memory,
        progress=show_progress(args),
        allow_gaps=args.allow_gaps,
        class_indices=args.class_indices,
    )


def runner_from_args(args: argparse.Namespace) -> Any:
    """The runner ``--engine`` names: this process, or Ray Data with the parsed cluster options."""
    if args.engine != "ray":
        from .runners.local import LocalRunner

        return LocalRunner(progress=show_progress(args))
    from .runners.ray_data import RayOptions, RayRunner

    options = RayOptions(address=args.address, num_workers=args.num_workers,
                         gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker)
    return RayRunner(options, progress=show_progress(args))


def check_digest(backend: Any, expected: str | None) -> None:
    """``--expect-sha256``: refuse a model whose digest is not the pinned one.

    Raises:
        SegError: the digests differ (both named).
    """
    if expected and backend.digest != expected.strip().lower():
        raise SegError(f"{backend.describe().get('bundle') or backend.describe().get('checkpoint')}: the model's "
                       f"SHA-256 is {backend.digest}, not the expected {expected}")


def preflight(args: argparse.Namespace, model: Any, model_arg: str, dist: str) -> None:
    """Everything a prediction run can check before it loads a model, in one place for both CLIs.

    Args:
        args: The parsed command line.
        model: The parsed model argument (None when missing).
        model_arg: The model argument as the tool names it in messages (``BUNDLE_DIR``, ``--model``).
        dist: The distribution whose extras the hints name (``seg-runtime`` or ``seg``).

    Raises:
        SegError: a missing model or input argument, a missing input path, or an extra (highdicom,
            Ray) that is not installed.
    """
    if model is None or args.input is None:
        raise SegError(f"{model_arg} and -i/--input are required (unless --summary)")
    if not args.input.exists():
        raise SegError(f"input not found: {args.input}")
    if args.dicom_seg:
        from .dicom_seg import require_highdicom

        require_highdicom(dist)
    runner_from_args(args).check()
