"""A first accuracy peer, cheap and 2D: nnU-Net and ``seg auto`` on the shared ISBI slices.

Decided before running, one run per arm, reported whatever it shows:

- data: ISBI slices 0-14 train, 15-19 are scored (membrane Dice, ``seg evaluate`` for both arms);
- nnU-Net (from the registry): its planner (2d), its ``nnUNetTrainer`` on the CPU, one fold (a
  fixed split: slices 0-11 train, 12-14 validate), its default 50-iteration validation cut to 5,
  ``num_epochs`` 20 and iterations per epoch scaled so that training takes 10 minutes (from the
  seconds per iteration of a 3-iteration calibration run); predicted with ``nnUNetv2_predict``
  (mirroring on, its default);
- ``seg auto``: ``--time-budget 5`` on 2 folds (it cannot train one fold alone: k >= 2), 10
  minutes of training in all; the 2-fold ensemble and fold 0 alone are scored, mirroring on.

    python tools/bench_vs_nnunet.py --work /tmp/bench_vs_nnunet --out docs/benchmarks/2026-12-06
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_auto import link_slices, membrane_dice, seg  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ISBI = REPO.parent / "shared" / "data" / "isbi2012-membrane"
DATASET_ID, DATASET = 778, "Dataset778_ISBI"
TRAIN, SCORED = range(15), range(15, 20)
MINUTES, EPOCHS = 10, 20
TRAINER = r"""
import json, sys, time, torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer as Base

class nnUNetTrainer(Base):  # nnU-Net's trainer, its schedule scaled to the budget
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cpu")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs, self.num_iterations_per_epoch = int(sys.argv[2]), int(sys.argv[3])
        self.num_val_iterations_per_epoch = 5

folder = f"{nnUNet_preprocessed}/{sys.argv[1]}"
plans = load_json(f"{folder}/nnUNetPlans.json")
plans["continue_training"] = False
start = time.perf_counter()
nnUNetTrainer(plans, "2d", 0, load_json(f"{folder}/dataset.json")).run_training()
print(json.dumps({"train_seconds": time.perf_counter() - start}))
"""


def _env(work: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "nnUNet_raw": str(work / "raw"), "nnUNet_preprocessed": str(work / "pre"),
            "nnUNet_results": str(work / "results"), "nnUNet_compile": "f", **extra}


def _train(work: Path, epochs: int, iterations: int) -> float:
    done = subprocess.run([sys.executable, "-c", TRAINER, DATASET, str(epochs), str(iterations)],
                          env=_env(work, nnUNet_n_proc_DA="0"), check=True, capture_output=True, text=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["train_seconds"])


def nnunet_arm(work: Path) -> dict:
    from PIL import Image

    raw = work / "raw" / DATASET
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (raw / sub).mkdir(parents=True, exist_ok=True)
    for index in [*TRAIN, *SCORED]:
        image = Image.open(ISBI / "images" / f"{index}.png")
        target = raw / ("imagesTr" if index in TRAIN else "imagesTs") / f"isbi{index:02d}_0000.png"
        image.save(target)
        if index in TRAIN:  # nnU-Net wants consecutive labels: membrane (file value 0) -> 1
            label = (np.asarray(Image.open(ISBI / "labels" / f"{index}.png")) == 0).astype(np.uint8)
            Image.fromarray(label).save(raw / "labelsTr" / f"isbi{index:02d}.png")
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "EM"}, "file_ending": ".png",
                                                  "labels": {"background": 0, "membrane": 1}, "numTraining": len(TRAIN)}))
    subprocess.run(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d", "-np", "1"],
                   env=_env(work), check=True)
    (work / "pre" / DATASET / "splits_final.json").write_text(json.dumps(
        [{"train": [f"isbi{i:02d}" for i in range(12)], "val": [f"isbi{i:02d}" for i in range(12, 15)]}]))
    calibration = _train(work, 1, 3) / 4  # 3 training + ~1 validation-sized iterations, start-up included
    iterations = max(1, int(MINUTES * 60 / EPOCHS / calibration))
    seconds = _train(work, EPOCHS, iterations)
    start = time.perf_counter()
    subprocess.run(["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(work / "nnunet_pred"), "-d",
                    str(DATASET_ID), "-c", "2d", "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"],
                   env=_env(work), check=True)
    inference = time.perf_counter() - start
    scored = work / "nnunet_scored"
    scored.mkdir(exist_ok=True)
    for index in SCORED:  # nnU-Net writes class indices (membrane 1): back to ISBI's values, as seg writes them
        label = np.asarray(Image.open(work / "nnunet_pred" / f"isbi{index:02d}.png"))
        Image.fromarray(np.where(label == 1, 0, 255).astype(np.uint8)).save(scored / f"{index}.png")
    return {"model": "nnU-Net 2d, fold 0", "train_min": round(seconds / 60, 1), "iterations_per_epoch": iterations,
            "epochs": EPOCHS, "inference_min": round(inference / 60, 2),
            "dice_membrane": membrane_dice(scored, work / "isbi_val" / "labels")}


def seg_arm(work: Path) -> list[dict]:
    auto = work / "auto_isbi"
    start = time.perf_counter()
    seg("auto", str(work / "isbi_train"), "-o", str(auto), "--device", "cpu", "--time-budget", str(MINUTES // 2),
        "--labels", "interior=255", "membrane=0", "data.split.folds=2")
    total = time.perf_counter() - start
    rows = []
    for name, extra in (("seg auto, 2-fold ensemble", []), ("seg auto, fold 0 alone", ["--folds", "0"])):
        pred = work / ("seg_" + ("ensemble" if not extra else "fold0"))
        start = time.perf_counter()
        seg("predict", "-m", str(auto / "cv"), *extra, "-i", str(work / "isbi_val" / "images"), "-o", str(pred))
        rows.append({"model": name, "auto_total_min": round(total / 60, 1),
                     "inference_min": round((time.perf_counter() - start) / 60, 2),
                     "dice_membrane": membrane_dice(pred, work / "isbi_val" / "labels")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--arms", nargs="+", choices=("nnunet", "seg"), default=["nnunet", "seg"],
                        help="the arms to run (default both); rows already in --out's JSON are kept")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    link_slices(ISBI, args.work / "isbi_train", TRAIN)
    link_slices(ISBI, args.work / "isbi_val", SCORED)
    rows = ([nnunet_arm(args.work)] if "nnunet" in args.arms else []) + (seg_arm(args.work) if "seg" in args.arms else [])
    for row in rows:
        print(row)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "bench_vs_nnunet.json"
        meta = json.loads(path.read_text()) if path.is_file() else {}
        kept = [r for r in meta.get("rows", []) if not any(r["model"].startswith(p) for p in _prefixes(args.arms))]
        meta.update({"rows": kept + rows, "scored_on": "ISBI slices 15-19 (held out), membrane Dice"})
        meta.setdefault("commands", []).append(" ".join(["python", "tools/bench_vs_nnunet.py", *sys.argv[1:]]))
        path.write_text(json.dumps(meta, indent=2) + "\n")


def _prefixes(arms: list[str]) -> list[str]:
    return [{"nnunet": "nnU-Net", "seg": "seg auto"}[arm] for arm in arms]


if __name__ == "__main__":
    main()
