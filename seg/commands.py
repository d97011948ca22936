"""What each ``seg`` sub-command does (the CLI parses; these call the library and print)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from seg.errors import SegError
from seg.table import format_table
from seg_runtime.atomic import atomic_write_text

log = logging.getLogger(__name__)


def cmd_train(args: argparse.Namespace) -> int:
    from seg.config import load_config
    from seg.engine.fit import fit

    if args.folds:  # "--folds 0 2 train.epochs=3": argparse hands the overrides to --folds
        args.overrides = [*args.overrides, *(t for t in args.folds if "=" in t)]
        args.folds = [t for t in args.folds if "=" not in t]
    cfg = load_config(args.config, args.overrides)
    if args.folds:
        return _train_folds(cfg, args)
    result = fit(cfg, run_dir=args.run_dir, resume=args.resume)
    state = "interrupted (resume with --resume)" if result.interrupted else "done"
    best = ("not validated (the validation split is empty)" if result.best_metric is None
            else f"{result.best_metric:.4f}")
    print(f"training {state}: {result.epochs_done} epochs, best val Dice {best}")
    print(f"run folder: {result.run_dir}")
    return 130 if result.interrupted else 0


def _train_folds(cfg, args: argparse.Namespace) -> int:
    from seg.workflows.cv import cross_validate, parse_folds

    folds = parse_folds(args.folds, cfg.data.split.folds)
    result = cross_validate(cfg, folds, args.run_dir)
    print(format_table(["fold", "training"], [[f, result.trained.get(f, "not reached")] for f in folds]))
    if result.interrupted:
        print(f"cross-validation interrupted; rerun the same command to continue ({result.parent})")
        return 130
    _print_cv(result)
    return 0


def _print_cv(result) -> None:
    from seg.workflows.auto import cv_rows, postprocessing_rows

    print(format_table(*cv_rows(result.table)))
    print(f"written: {result.parent / 'cv_results.csv'}, {result.parent / 'cv_results.json'}")
    if result.postprocessing is not None:
        post = result.postprocessing
        print(format_table(*postprocessing_rows(post)))
        print(f"post-processing: infer.keep_largest={post['keep_largest']} "
              f"infer.remove_small={post.get('remove_small', {})} in {result.parent / 'config.yaml'} "
              f"(evidence: {result.parent / 'postprocessing.json'})")


def cmd_auto(args: argparse.Namespace) -> int:
    from seg.workflows.auto import run_auto

    result = run_auto(args.dataset, args.output, device=args.device, gpu_memory=args.gpu_memory,
                      time_budget=args.time_budget, overrides=args.overrides,
                      labels=dict(args.labels) if args.labels else None)
    if result.report is None:
        print(f"interrupted; rerun the same command to continue ({args.output})")
        return 130
    _print_cv(result.cv)
    print(f"deploy bundle: {result.bundle}  (seg-run {result.bundle} -i SCANS -o LABELS)")
    print(f"report: {result.report}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``seg predict``: the shared pre-flight, the model as a backend, the shared run and summary."""
    import time

    from seg_runtime.cli import print_folder_summary
    from seg_runtime.cli_options import check_digest, predict_options, preflight, runner_from_args
    from seg_runtime.predict import predict_folder
    from seg_runtime.summary import run_summary

    if args.summary:
        return print_folder_summary(args.output, "seg predict")
    preflight(args, args.model, "--model", "seg")
    from seg.inference import load_backend
    from seg.inference.onnx_backend import choose_backend

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    backend = load_backend(args.model, device=args.device, folds=args.folds)
    check_digest(backend, args.expect_sha256)
    if args.engine != "ray":  # Ray actors load their own (torch) model
        backend = choose_backend(backend, args.backend, args.threads)
    start = time.perf_counter()
    manifest = predict_folder(args.input, args.output, backend, predict_options(args), runner_from_args(args))
    print(run_summary(manifest, args.output, time.perf_counter() - start))
    return 1 if manifest.summary["failed"] else 0


def _label_source(args: argparse.Namespace):
    """Labels, regions, raw->class value map and where they came from: --config, --model, the
    reference folder's dataset.json (values as in the files), else the values the references hold."""
    from seg.config import load_config
    from seg.evaluation import dataset_json_for, labels_from_dataset_json

    if args.config:
        cfg, source = load_config(args.config), f"the config {args.config}"
    elif args.model:
        from seg.engine.checkpoint import load_checkpoint, resolve_checkpoint

        checkpoint = resolve_checkpoint(args.model)
        cfg, source = load_checkpoint(checkpoint).config, f"the model {checkpoint}"
    else:
        meta = dataset_json_for(args.ref)
        found = labels_from_dataset_json(meta) if meta else None
        if found:
            return (*found, None, str(meta))
        return _labels_from_refs(args.ref), {}, None, f"the values in {args.ref} (no --model, --config or dataset.json)"
    return cfg.data.labels, cfg.data.regions, cfg.data.label_values, source


def _labels_from_refs(ref_dir: Path) -> dict[str, int]:
    import numpy as np

    from seg.evaluation import label_files, load_labels

    values: set[int] = set()
    for path in label_files(ref_dir).values():
        values |= {int(v) for v in np.unique(load_labels(path))}
    return {("background" if v == 0 else f"class_{v}"): v for v in sorted(values)}


def cmd_evaluate(args: argparse.Namespace) -> int:
    from seg.evaluation import evaluate_folders, format_evaluation, unknown_labels_warning, write_evaluation

    labels, regions, values, source = _label_source(args)
    result = evaluate_folders(args.pred, args.ref, labels, regions, surface=not args.no_surface,
                              tolerance=args.tolerance, label_values=values, label_source=source)
    if not result["cases"]:
        reasons = "; ".join(f["error"] for f in result["failed"][:3])
        raise SegError(f"no case of {args.ref} could be scored against {args.pred}" + (f" ({reasons})" if reasons else ""))
    csv_path, json_path = write_evaluation(result, args.output or args.pred)
    print(format_evaluation(result))
    warning = unknown_labels_warning(result)
    if warning:
        print(warning)
    failed = result["failed"]
    if failed:
        total = len(failed) + len(result["cases"])
        print(f"FAILED {len(failed)} of {total} cases (not in the means):")
        print("\n".join(f"  {f['id']}: {f['error']}" for f in failed[:10]))
    print(f"written: {csv_path}, {json_path} (per case: TP, FP, FN voxels too)")
    return 1 if failed else 0


def cmd_export(args: argparse.Namespace) -> int:
    from seg.export_onnx import export_bundle

    report = export_bundle(args.model, args.output, fp16=args.fp16 or None, opset=args.opset, folds=args.folds)
    print(f"bundle: {report.bundle_dir}")
    print(format_table(*report.parity_rows()))
    print(f"deploy with: seg-run {report.bundle_dir} -i SCANS -o LABELS")
    return 0


def cmd_import_nnunet(args: argparse.Namespace) -> int:
    from seg.nnunet_import import import_nnunet

    report = import_nnunet(args.result_folder, args.output, folds=args.folds, checkpoint=args.checkpoint)
    print(format_table(["bundle", "configuration", "folds", "max |diff| onnx"],
                       [[str(report.bundle_dir), report.configuration, " ".join(map(str, report.folds)),
                         report.max_abs_diff]]))
    print(f"deploy with: seg-run predict {report.bundle_dir} -i SCANS -o LABELS")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from seg.workflows.demo import run_demo

    result = run_demo(args.out, dims=args.dims, overrides=args.overrides)
    print(result.table())
    print(f"outputs in {args.out} (run folder, torch and onnx predictions, deploy bundle)")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    if args.config.is_dir():
        return _plan_dataset(args)
    if not args.config.exists():
        raise FileNotFoundError(f"{args.config}: no such dataset folder or config file")
    from seg.config import load_config
    from seg.data.datalist import build_datalist
    from seg.data.plan import fingerprint, plan_to_yaml, propose_settings

    cfg = load_config(args.config, args.overrides)
    items = build_datalist(cfg.data)
    text = plan_to_yaml(propose_settings(fingerprint(items, cfg.data), cfg.data, memory_budget=args.device,
                                         gpu_memory=args.gpu_memory))
    print(text)
    if args.output:
        atomic_write_text(args.output, text)
    return 0


def _plan_dataset(args: argparse.Namespace) -> int:
    from seg.config import load_config
    from seg.data.plan_config import plan_config

    planned = plan_config(args.config, device=args.device, gpu_memory=args.gpu_memory,
                          time_budget=args.time_budget, labels=dict(args.labels) if args.labels else None)
    if args.overrides:
        planned = planned.with_overrides(args.overrides)
    print(format_table(["setting", "value", "based on"], planned.rows))
    text = planned.to_yaml()
    if args.output:
        atomic_write_text(args.output, text)
        written = load_config(args.output)  # where seg train will put the runs, read as it reads them
        print(f"config written: {args.output} (train it with: seg train {args.output} --folds all; "
              f"the runs go to {written.output_dir / written.name})")
    else:
        print(text)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from seg.models import MODEL_INFO, MODELS

    rows = [[name, MODEL_INFO[name].dims_text, MODEL_INFO[name].description] for name in MODELS.names()]
    print(format_table(["model", "dims", "description"], rows))
    print("set one as model.name in a config (model.size: small | base; model.params: its own options)")
    return 0
