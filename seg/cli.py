"""The ``seg`` command: parses arguments, calls the library, prints results.

Expected failures (:class:`seg.errors.SegError`: bad config, bad checkpoint, diverged run, failed
export; and missing or unwritable user paths) print one line ``seg <command>: error: ...`` and exit
with status 2; ``--debug`` shows the traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import seg
from seg import commands
from seg.errors import is_user_error, one_line
from seg_runtime.install_check import duplicate_runtime

EPILOG = "Docs and examples: README.md. Every command has its own --help."


LABELS_HELP = ("the classes and their values in the label files, background first (e.g. interior=255 "
               "membrane=0); default: dataset.json, else value 0 is the background. Class names have no "
               "dots, so section.key=value overrides may follow")


def _label(text: str) -> tuple[str, int]:
    name, _, value = text.partition("=")
    try:
        return name.strip(), int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with an integer value, got {text!r}") from None


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config", epilog=EPILOG,
                       description="Train from a config file into a run folder (output_dir/name): resolved "
                       "config, last.pt/best.pt checkpoints, metrics.jsonl, curves.png, train.log.")
    p.add_argument("config", type=Path, help="experiment YAML (may name a base: to inherit)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides, e.g. train.epochs=3 model.size=base data.root=/data")
    p.add_argument("--resume", action="store_true", help="continue the run in the run folder from last.pt "
                   "(raise train.epochs to extend a finished run)")
    p.add_argument("--run-dir", type=Path, help="run folder (default: output_dir/name from the config); with "
                   "--folds, the parent of the fold_<i> folders")
    p.add_argument("--folds", nargs="+", metavar="FOLD", help="cross-validation: 'all' (data.split.folds, default "
                   "5) or fold numbers (0 2); trains each fold into fold_<i>/, predicts its validation cases and "
                   "writes cv_results.csv/json. A rerun continues where it stopped")
    p.set_defaults(func=commands.cmd_train)


def _add_predict(sub) -> None:
    from seg_runtime.cli_options import EXIT_CODES, add_predict_options

    p = sub.add_parser("predict", help="predict label maps for a folder of scans",
                       epilog=f"{EXIT_CODES} {EPILOG}",
                       description="Load a model once and predict every case under INPUT into OUTPUT, in each "
                       "input's own format and geometry. Bad cases are reported and skipped; predictions.jsonl "
                       "records each case as it ends.")
    p.add_argument("--model", "-m", type=Path, help="run folder, checkpoint file, or CV folder (seg train "
                   "--folds): its folds' mean probabilities (required unless --summary)")
    p.add_argument("--folds", type=int, nargs="+", metavar="K",
                   help="with a CV folder as --model: ensemble only these folds (default: all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or gpu (= cuda); "
                   "without CUDA it falls back to the CPU with a warning (default auto)")
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                   help="auto (default): onnxruntime on the CPU (exported in memory once, checked against "
                   "torch; several times faster), torch on a GPU; torch/onnx force one. With --engine ray "
                   "the actors run torch")
    add_predict_options(p)
    p.set_defaults(func=commands.cmd_predict)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score predicted label maps against references", epilog=EPILOG,
                       description="Per case and structure (class or region): Dice, HD95 (mm), normalised "
                       "surface Dice, TP/FP/FN voxels and the reference and predicted volumes (ml); per structure "
                       "their mean, std and median over the cases. Writes evaluation.csv + evaluation.json and "
                       "prints the tables.")
    p.add_argument("--pred", required=True, type=Path, help="folder of predicted label maps")
    p.add_argument("--ref", required=True, type=Path, help="folder of reference label maps; without --config or "
                   "--model the label names come from a dataset.json in it or its parent folder")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", type=Path, help="config holding the label map and regions")
    src.add_argument("--model", type=Path, help="run folder/checkpoint holding the label map and regions")
    p.add_argument("-o", "--output", type=Path, help="where to write evaluation.csv/json (default: --pred)")
    p.add_argument("--no-surface", action="store_true", help="Dice only: skip HD95 and NSD (faster)")
    p.add_argument("--tolerance", type=float, default=1.0, help="NSD tolerance in mm (default 1.0)")
    p.set_defaults(func=commands.cmd_evaluate)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a trained model to an ONNX deploy bundle", epilog=EPILOG,
                       description="Write model.onnx + model.json (everything seg-run needs, no torch) and "
                       "check onnxruntime against torch; fails when they differ beyond the tolerance.")
    p.add_argument("model", type=Path, help="run folder or checkpoint file")
    p.add_argument("-o", "--output", required=True, type=Path, help="bundle folder")
    p.add_argument("--fp16", action="store_true", help="store weights in float16 (I/O stays float32)")
    p.add_argument("--opset", type=int, help="ONNX opset (default from the config, 17)")
    p.add_argument("--folds", type=int, nargs="+", metavar="K",
                   help="for a CV folder: export the ensemble of these folds only (default: all)")
    p.set_defaults(func=commands.cmd_export)


def _add_import_nnunet(sub) -> None:
    p = sub.add_parser("import-nnunet", help="import a trained nnU-Net v2 model as a seg bundle", epilog=EPILOG,
                       description="Rebuild an nnU-Net v2 model from its result folder (TRAINER__PLANS__CONFIG: "
                       "dataset.json, plans.json, fold_N/checkpoint_*.pth, postprocessing.json when present) and "
                       "write a bundle that seg-run runs without torch, with nnU-Net's preprocessing, sliding "
                       "window, mirroring, fold ensemble and post-processing. Needs pip install 'seg[nnunet]'.")
    p.add_argument("result_folder", type=Path, help="nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIGURATION")
    p.add_argument("-o", "--output", required=True, type=Path, help="bundle folder to write")
    p.add_argument("--folds", nargs="+", metavar="FOLD", help="fold numbers (default: every fold_N present) or "
                   "'all' (nnU-Net's separate fold_all model); several folds average their logits")
    p.add_argument("--checkpoint", choices=("final", "best"), default="final",
                   help="checkpoint_final.pth (default) or checkpoint_best.pth")
    p.set_defaults(func=commands.cmd_import_nnunet)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="train, predict, export and deploy on built-in synthetic data",
                       epilog=EPILOG, description="The whole pipeline in a few minutes on a CPU: synthetic "
                       "dataset -> training -> seg predict -> seg export -> seg-run, with a Dice table.")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="working folder (default demo_out)")
    p.add_argument("--dims", type=int, choices=(2, 3), default=3, help="2D or 3D demo (default 3)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=2")
    p.set_defaults(func=commands.cmd_demo)


def _add_plan_budget(p) -> None:
    """The planning options shared by ``seg plan`` and ``seg auto``."""
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="memory budget to plan for (default cpu)")
    p.add_argument("--gpu-memory", type=float, metavar="GB", help="GPU memory; scales the gpu patch budget")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="training minutes per fold (dataset folders; default 60 on cpu, 720 on gpu)")
    p.add_argument("--labels", type=_label, nargs="+", metavar="NAME=VALUE", help=LABELS_HELP)


def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="plan a dataset folder into a runnable config (or propose settings for a config)",
                       epilog=EPILOG, description="DATASET folder: detect the layout (nnU-Net raw, MSD, case "
                       "folders, 2D image folders), read labels and channels, fingerprint every case and write a "
                       "complete config sized to the budget, with a table of the statistics behind each choice. "
                       "CONFIG file: print YAML with spacing, patch, batch and normalisation to paste into it.")
    p.add_argument("config", type=Path, metavar="DATASET|CONFIG", help="a dataset folder, or a config file "
                   "whose data section names the dataset")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.epochs=10 data.split.folds=3 (written into the planned config)")
    p.add_argument("-o", "--output", type=Path, help="write the config (DATASET) or the YAML (CONFIG) here")
    _add_plan_budget(p)
    p.set_defaults(func=commands.cmd_plan)


def _add_auto(sub) -> None:
    p = sub.add_parser("auto", help="dataset folder -> planned config, k-fold CV, post-processing, ensemble bundle",
                       epilog=EPILOG, description="One resumable command: plan DATASET (as seg plan), train and "
                       "score every fold (as seg train --folds all), keep the post-processing that helps on the "
                       "pooled CV, export the fold ensemble as one deploy bundle, and write OUT/report.md with "
                       "the tables and OUT/curves.png. Rerun the same command to continue after a kill.")
    p.add_argument("dataset", type=Path, help="dataset folder (nnU-Net raw, MSD, case folders, 2D image folders)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides of the planned config, e.g. data.split.folds=3 train.epochs=10")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    _add_plan_budget(p)
    p.set_defaults(func=commands.cmd_auto)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seg", description="Medical image segmentation: train from configs, "
                                     "predict scan folders, export ONNX deploy bundles.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"seg {seg.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_predict, _add_evaluate, _add_export, _add_import_nnunet, _add_demo, _add_plan,
                _add_auto):
        add(sub)
    sub.add_parser("models", help="list the registered models", description="List the registered models, "
                   "the dims each builds and one line about it.").set_defaults(func=commands.cmd_models)
    return parser


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; ``KEY=VALUE`` overrides may also follow the options (``-o OUT k=v``)."""
    parser = build_parser()
    argv, after_labels = _overrides_after_labels(list(sys.argv[1:] if argv is None else argv))
    args, extra = parser.parse_known_args(argv)
    extra = [*extra, *after_labels]
    if hasattr(args, "overrides"):
        unknown = [e for e in extra if "=" not in e or e.startswith("-")]
        if not unknown:
            args.overrides = [*args.overrides, *extra]
        extra = unknown  # name only what is wrong, not the overrides beside it
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _overrides_after_labels(argv: list[str]) -> tuple[list[str], list[str]]:
    """Take config overrides out of a ``--labels`` list, which would swallow them.

    ``seg auto DATA -o OUT --labels a=0 b=1 data.split.folds=2 seed=1``: a dotted key, or a top-level
    config key (``seed``, ``name``, ``output_dir``, a section), is an override; any other name is a class.
    """
    if "--labels" not in argv:
        return argv, []
    from seg.config import Config

    kept, overrides, in_labels = [], [], False
    for token in argv:
        key = token.partition("=")[0]
        if token.startswith("-"):
            in_labels = token == "--labels"
        elif in_labels and ("." in key or key in Config.model_fields):
            overrides.append(token)
            continue
        kept.append(token)
    return kept, overrides


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("seg").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if (duplicate := duplicate_runtime()) is not None:
        logging.getLogger("seg.cli").warning(duplicate)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"seg {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug or not is_user_error(err):
            raise
        print(f"seg {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
