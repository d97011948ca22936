"""nnU-Net's own predictor against seg-run on the same imported model: seconds, peak RSS, labels.

The shared BraTS cases become an nnU-Net raw dataset (Flair + T1c, labels 0-4), nnU-Net plans and
preprocesses it (3d_fullres), trains it briefly on the CPU (a few iterations: enough for timing,
the weights' quality does not change the work per case), and ``seg import-nnunet`` imports it.
Then, each in a fresh process whose process tree's resident memory is sampled every 0.1 s:

    nnunet     nnUNetv2_predict -device cpu (--disable_tta without mirroring)
    seg-run    seg-run predict BUNDLE (--no-tta / --tta)
    seg-run ray  the same with --engine ray --num-workers 2

without mirroring on 2 cases, with mirroring (nnU-Net's default) on 1 case. Label agreement is
seg-run's against nnU-Net's labels, voxel by voxel.

    python tools/bench_nnunet.py --work /tmp/bench_nnunet --out docs/benchmarks/2026-12-06
    python tools/bench_nnunet.py --work /tmp/bench_nnunet --skip-prepare ...   # reuse the model
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BRATS = REPO.parent / "shared" / "data" / "brats2013-deepmedic"
DATASET_ID, DATASET = 777, "Dataset777_BraTSShared"
CHANNELS = ("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz")
CASES = ("brats_2013_pat0003_1", "brats_2013_pat0004_1", "brats_2013_pat0005_1", "brats_2013_pat0006_1")
TRAINER = r"""
import sys, torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer as Base

class nnUNetTrainer(Base):  # same name, same network: nnUNetv2_predict rebuilds it as its own
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cpu")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch, self.num_val_iterations_per_epoch, self.num_epochs = int(sys.argv[2]), 1, 1

torch.manual_seed(0)
folder = f"{nnUNet_preprocessed}/{sys.argv[1]}"
plans = load_json(f"{folder}/nnUNetPlans.json")
plans["continue_training"] = False
nnUNetTrainer(plans, "3d_fullres", 0, load_json(f"{folder}/dataset.json")).run_training()
"""


def _env(work: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "nnUNet_raw": str(work / "raw"), "nnUNet_preprocessed": str(work / "pre"),
            "nnUNet_results": str(work / "results"), "nnUNet_compile": "f", **extra}


def _run(command: list[str], env: dict[str, str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, env=env, check=True)


def prepare(work: Path, iterations: int) -> Path:
    """Raw dataset, nnU-Net's plan + preprocess, a brief training, the import; returns the bundle."""
    import nibabel as nib

    raw = work / "raw" / DATASET
    for folder in ("imagesTr", "labelsTr"):
        (raw / folder).mkdir(parents=True, exist_ok=True)
    for case in CASES:
        for index, name in enumerate(CHANNELS):
            shutil.copy(BRATS / case / name, raw / "imagesTr" / f"{case}_{index:04d}.nii.gz")
        label = nib.load(str(BRATS / case / "OTMultiClass.nii.gz"))
        nib.save(nib.Nifti1Image(np.asarray(label.dataobj).astype(np.uint8), label.affine), str(raw / "labelsTr" / f"{case}.nii.gz"))
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "Flair", "1": "T1c"}, "file_ending": ".nii.gz", "numTraining": len(CASES),
        "labels": {"background": 0, "necrosis": 1, "edema": 2, "non_enhancing": 3, "enhancing": 4}}))
    env = _env(work)
    _run(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "1"], env)
    (work / "pre" / DATASET / "splits_final.json").write_text(json.dumps(
        [{"train": list(CASES[2:]), "val": list(CASES[:2])}]))
    _run([sys.executable, "-c", TRAINER, DATASET, str(iterations)], _env(work, nnUNet_n_proc_DA="0"))
    bundle = work / "bundle"
    _run(["seg", "import-nnunet", str(work / "results" / DATASET / "nnUNetTrainer__nnUNetPlans__3d_fullres"),
          "-o", str(bundle), "--folds", "0"], env)
    return bundle


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (from /proc)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


def measure(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall seconds and the peak resident memory of the whole process tree."""
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], _tree_rss(process.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = process.communicate()
    seconds = time.perf_counter() - start
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed:\n{err[-3000:]}")
    return {"seconds": round(seconds, 1), "peak_rss_gb": round(peak[0] / 2**30, 2)}


def _agreement(ours: Path, theirs: Path) -> float:
    import nibabel as nib

    a, b = (np.asarray(nib.load(str(p)).dataobj) for p in (ours, theirs))
    return float((a == b).mean())


def run(work: Path, bundle: Path, settings: tuple[bool, ...] = (False, True)) -> list[dict]:
    env = _env(work)
    rows = []
    for mirror, cases in ((False, CASES[:2]), (True, CASES[:1])):
        if mirror not in settings:
            continue
        source = work / f"in_{'mirror' if mirror else 'plain'}"
        source.mkdir(exist_ok=True)
        for case in cases:
            for index, name in enumerate(CHANNELS):
                shutil.copy(BRATS / case / name, source / f"{case}_{index:04d}.nii.gz")
        tag = "mirror" if mirror else "plain"
        nnunet_out = work / f"nnunet_{tag}"
        commands = {
            "nnunet": ["nnUNetv2_predict", "-i", str(source), "-o", str(nnunet_out), "-d", str(DATASET_ID), "-c",
                       "3d_fullres", "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"]
                      + ([] if mirror else ["--disable_tta"]),
            "seg-run": ["seg-run", "predict", str(bundle), "-i", str(source), "-o", str(work / f"seg_{tag}"),
                        "--tta" if mirror else "--no-tta"],
            "seg-run ray": ["seg-run", "predict", str(bundle), "-i", str(source), "-o", str(work / f"ray_{tag}"),
                            "--tta" if mirror else "--no-tta", "--engine", "ray", "--num-workers", "2"],
        }
        for tool, command in commands.items():
            if mirror and tool == "seg-run ray":
                continue  # one mirrored case: two workers have nothing to share
            out = nnunet_out if tool == "nnunet" else Path(command[command.index("-o") + 1])
            shutil.rmtree(out, ignore_errors=True)  # a rerun times the work, not seg-run's skip of done cases
            result = measure(command, env)
            agreement = (None if tool == "nnunet" else
                         round(min(_agreement(out / f"{c}.nii.gz", nnunet_out / f"{c}.nii.gz") for c in cases), 5))
            rows.append({"tool": tool, "mirroring": mirror, "cases": len(cases),
                         "seconds_per_case": round(result["seconds"] / len(cases), 1),
                         "peak_rss_gb": result["peak_rss_gb"], "label_agreement_min": agreement})
            print(rows[-1], flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| tool | mirroring | cases | s / case | peak RSS (GB) | labels = nnU-Net's |", "|---|---|---|---|---|---|"]
    for r in rows:
        agree = "-" if r["label_agreement_min"] is None else f"{100 * r['label_agreement_min']:.3f} %"
        lines.append(f"| {r['tool']} | {'on' if r['mirroring'] else 'off'} | {r['cases']} | {r['seconds_per_case']} | "
                     f"{r['peak_rss_gb']} | {agree} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (raw, preprocessed, results, outputs)")
    parser.add_argument("--out", type=Path, help="write bench_nnunet.json and .md here")
    parser.add_argument("--iterations", type=int, default=5, help="training iterations (timing only)")
    parser.add_argument("--skip-prepare", action="store_true", help="reuse the model and bundle in --work")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--no-mirror", action="store_true",
                      help="only the rows without mirroring (nnU-Net's mirrored case takes ~8x as long)")
    only.add_argument("--mirror-only", action="store_true", help="only the rows with mirroring")
    args = parser.parse_args()
    bundle = args.work / "bundle" if args.skip_prepare else prepare(args.work, args.iterations)
    started = os.getloadavg()[0]
    settings = (False,) if args.no_mirror else (True,) if args.mirror_only else (False, True)
    rows = run(args.work, bundle, settings)
    print(table(rows))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        meta = {"command": " ".join(["python", "tools/bench_nnunet.py", *sys.argv[1:]]), "machine": platform.node(),
                "cpus": os.cpu_count(), "load_average_1min": {"start": started, "end": os.getloadavg()[0]},
                "rows": rows}
        (args.out / "bench_nnunet.json").write_text(json.dumps(meta, indent=2) + "\n")
        (args.out / "bench_nnunet.md").write_text(f"{table(rows)}\n\nCommand: `{meta['command']}`\n")


if __name__ == "__main__":
    main()
