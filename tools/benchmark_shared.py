"""Train and score models on the shared real data (BraTS 2013, ISBI 2012) with one budget.

For every (dataset, model) pair: ``seg train`` the config with the chosen budget, ``seg predict``
the validation cases in their original geometry, ``seg evaluate`` them against the original
references (post-processed as the config's ``infer.keep_largest`` says; override it with
``--override infer.keep_largest=[]`` for raw scores), and print one table (JSON with ``--json``):

    python tools/benchmark_shared.py --dataset brats --models ag_unet gla_unet monai_attention_unet
    python tools/benchmark_shared.py --dataset isbi --models ag_unet smp_unet --epochs 10
    python tools/benchmark_shared.py --dataset brats --epochs 15 --seeds 0 1 2 --json brats.json

Summarise several seeds (and folds: ``--override "data.split.train=[...]" "data.split.val=[...]"``
with a ``name=`` of its own) with ``tools/summarize_shared.py``.

Configs: ``configs/<dataset>_<model>.yaml`` when it exists, else ``configs/<dataset>_base.yaml``
with ``model.name=<model>``. Needs ../shared/data (see its README). Runs already under ``--out``
are resumed (interrupted ones finish, finished ones are reused, a higher ``--epochs`` extends them);
a run folder trained with other settings is refused, not scored as this experiment.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from seg.config import load_config
from seg.data.datalist import build_datalist, split_datalist
from seg.engine.checkpoint import load_checkpoint
from seg.engine.fit import fit
from seg.evaluation import evaluate_folders
from seg.inference import load_backend
from seg.table import format_table
from seg_runtime.options import PredictOptions
from seg_runtime.predict import predict_folder

REPO = Path(__file__).resolve().parents[1]
KEYS = {"brats": ["dice_whole_tumour", "dice_tumour_core", "dice_enhancing_tumour", "hd95_whole_tumour"],
        "isbi": ["dice_membrane", "hd95_membrane"]}


def config_for(dataset: str, model: str, overrides: list[str]):
    path = REPO / "configs" / f"{dataset}_{model}.yaml"
    if path.is_file():
        return load_config(path, overrides)
    extra = [f"model.name={model}", f"name={dataset}_{model}"]
    if not model.startswith(("ag_", "gla_", "region_", "timm_")):
        extra.append("model.deep_supervision=false")  # baselines have one output
    return load_config(REPO / "configs" / f"{dataset}_base.yaml", extra + overrides)


def link_validation(cfg, work: Path) -> tuple[Path, Path]:
    """Folders of symlinks: the validation inputs (as seg predict sees them) and their references."""
    items = build_datalist(cfg.data)
    _, val = split_datalist(items, cfg.data.split)
    inputs, refs = work / "val_inputs", work / "val_refs"
    for folder in (inputs, refs):
        folder.mkdir(parents=True, exist_ok=True)
    for item in val:
        cid = str(item["id"])
        label = Path(item["label"])
        ext = "".join(label.suffixes[-2:]) if label.name.endswith(".nii.gz") else label.suffix
        _link(refs / f"{cid}{ext}", label)
        if cfg.data.layout == "case_folders":
            _link(inputs / cid, Path(item["image"][0]).parent)
        else:
            image = Path(item["image"][0])
            _link(inputs / image.name, image)
    return inputs, refs


def _link(dst: Path, src: Path) -> None:
    if not dst.exists():
        dst.symlink_to(src.resolve())


def settings_differ(stored: dict, wanted: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (``train.epochs`` and
    ``output_dir`` excepted: a rerun may extend a run or find it under another folder)."""
    keys: list[str] = []
    for key in sorted(set(stored) | set(wanted)):
        dotted = f"{prefix}{key}"
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += settings_differ(a, b, f"{dotted}.")
        elif a != b and dotted not in ("train.epochs", "output_dir"):
            keys.append(dotted)
    return keys


def check_reusable(cfg, last: Path) -> None:
    """An existing run is only resumed for the same experiment: a run trained with other
    settings (another split, seed or recipe under the same name) would be scored as this one."""
    differ = settings_differ(load_checkpoint(last).config_dict, cfg.to_dict())
    if differ:
        raise SystemExit(f"{last.parent} holds a run with other settings ({', '.join(differ[:6])}); "
                         "give this experiment a name of its own (--override name=...) or another --out")


def run_one(dataset: str, model: str, args: argparse.Namespace, seed: int | None = None) -> dict:
    overrides = [f"output_dir={args.out / 'runs'}"] + list(args.override)
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    cfg = config_for(dataset, model, overrides)
    if seed is not None:  # seed 0 keeps the run's own name, so earlier single-seed runs are reused
        cfg.seed = seed
        cfg.name = cfg.name if seed == 0 else f"{cfg.name}_seed{seed}"
    run_dir = Path(cfg.output_dir) / cfg.name
    # An existing run is resumed: an interrupted one finishes, a finished one is reused as it is
    # (or extended when --epochs is raised). Training time is the run's own, summed over epochs.
    resume = (run_dir / "last.pt").is_file()
    if resume:
        check_reusable(cfg, run_dir / "last.pt")
    fit(cfg, run_dir, resume=resume)
    train_s = sum(json.loads(line)["seconds"] for line in (run_dir / "metrics.jsonl").read_text().splitlines())
    # One folder of links per run: runs with other splits (or folds) never see each other's cases.
    inputs, refs = link_validation(cfg, args.out / "val" / cfg.name)
    pred_dir = args.out / "pred" / cfg.name
    t0 = time.perf_counter()
    # Post-processing as the current config says (a finished run may predate the setting).
    options = PredictOptions(keep_largest=tuple(cfg.infer.keep_largest), overwrite=True, progress=False)
    predict_folder(inputs, pred_dir, load_backend(run_dir), options)
    predict_s = time.perf_counter() - t0
    result = evaluate_folders(pred_dir, refs, cfg.data.labels, cfg.data.regions, label_values=cfg.data.label_values)
    return {"dataset": dataset, "model": model, "name": cfg.name, "seed": cfg.seed, "epochs": cfg.train.epochs,
            "iters_per_epoch": cfg.train.iters_per_epoch, "keep_largest": list(cfg.infer.keep_largest),
            "train_s": round(train_s, 1),
            "predict_s_per_case": round(predict_s / max(len(result["cases"]), 1), 2), **result["mean"],
            "cases": result["cases"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(KEYS), required=True)
    parser.add_argument("--models", nargs="+", default=["ag_unet", "gla_unet", "monai_attention_unet"])
    parser.add_argument("--epochs", type=int, help="override train.epochs (same budget for every model)")
    parser.add_argument("--override", nargs="*", default=[], help="extra config overrides for every model")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="train every model once per seed (runs <name>_seed<S>; seed 0 keeps <name>)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "benchmark_shared")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows = [run_one(args.dataset, m, args, seed) for seed in (args.seeds or [None]) for m in args.models]
    keys = KEYS[args.dataset]
    print(format_table(["model", "epochs", "train s", "predict s/case", *keys],
                       [[r["model"], r["epochs"], r["train_s"], r["predict_s_per_case"], *[r.get(k) for k in keys]]
                        for r in rows]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
