"""Training at dataset scale: peak memory, loader batch time and step time vs the number of cases.

    python tools/bench_train_scale.py --quick
    python tools/bench_train_scale.py --json docs/benchmarks/2026-12-02/train_scale.json
    python tools/bench_train_scale.py --quick --cache memory    # the in-RAM cache, for contrast

For synthetic datasets of 20 / 100 / 400 cases (the demo phantoms, about 48 x 48 x 32 voxels, one
channel; a pool of a few phantoms is generated once and hard-linked under every case name, so
building 400 cases takes a second) it trains the tiny demo model for a few iterations, in a fresh
subprocess per case count, through the real ``Trainer`` (discovery, data check, cache build,
loader, ``train_step``). Reported per count:

- ``train_peak_rss_mb``: the child's peak resident set (``ru_maxrss``, MB; the larger of the
  training process and its loader workers);
- ``loader_batch_s``: median wait for the next batch inside the training loop (0 = the loader keeps up);
- ``step_s``: median training step (forward, loss, backward, optimiser);
- ``setup_s``: discovery, data check and cache build before the first step.

``measure(case_counts, quick)`` returns the same as a dict; ``tools/bench_scale.py`` imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
COUNTS = [20, 100, 400]
POOL_SIZE = 6
KEYS = ("train_peak_rss_mb", "loader_batch_s", "step_s", "setup_s")


def write_pool(folder: Path, size: int = POOL_SIZE, scale: int = 1) -> list[tuple[Path, Path]]:
    """Generate ``size`` phantoms as uncompressed NIfTI (image, label) files, ``scale`` x finer grids."""
    from seg.data.synthetic import make_phantom

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pool = []
    for i in range(size):
        phantom = make_phantom(3, rng)
        image, label, affine = phantom.image, phantom.label, phantom.affine.copy()
        if scale > 1:
            image, label = ndimage.zoom(image, scale, order=1), ndimage.zoom(label, scale, order=0)
            affine[:3, :3] /= scale
        paths = (folder / f"pool{i}_img.nii", folder / f"pool{i}_lbl.nii")
        for array, path in zip((image, label), paths):
            nib.save(nib.Nifti1Image(array, affine), path)
        pool.append(paths)
    return pool


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_dataset(root: Path, num_cases: int, pool: list[tuple[Path, Path]]) -> Path:
    """An nnU-Net raw dataset of ``num_cases`` training cases cycling through the pool's files."""
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    for i in range(num_cases):
        image, label = pool[i % len(pool)]
        _link(image, root / "imagesTr" / f"case{i:04d}_0000.nii")
        _link(label, root / "labelsTr" / f"case{i:04d}.nii")
    meta = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "lesion": 1, "organ": 2},
            "numTraining": num_cases, "file_ending": ".nii"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, workers) / 1024.0  # Linux reports KiB


def child(root: Path, out: Path, iters: int, cache: str, workers: str, channels: str) -> dict[str, Any]:
    """One measurement in this (fresh) process: set up a Trainer, time ``iters`` training steps."""
    from seg.config import load_config
    from seg.engine.fit import Trainer

    cfg = load_config(REPO / "configs" / "demo3d.yaml", [
        "data.layout=nnunet", f"data.root={root}", f"output_dir={out}", "name=bench", f"data.cache={cache}",
        f"data.num_workers={workers}", "train.epochs=1", f"train.iters_per_epoch={iters}",
        "train.batch_size=2", "train.patch_size=[32,32,32]", f"model.params.channels={channels}",
        "train.device=cpu", "train.amp=false", "data.preprocess.target_spacing=null"])
    t0 = time.perf_counter()
    trainer = Trainer(cfg, out / "bench", progress=False)
    setup = time.perf_counter() - t0
    trainer.net.train()
    waits, steps = [], []
    batches = iter(trainer.loaders.train)
    for _ in range(iters):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        trainer.train_step(batch)
        waits.append(t1 - t0)
        steps.append(time.perf_counter() - t1)
    del batches  # shuts the loader workers down and joins them, so RUSAGE_CHILDREN counts them
    return {"train_peak_rss_mb": round(_peak_rss_mb(), 1), "loader_batch_s": round(statistics.median(waits[1:]), 4),
            "step_s": round(statistics.median(steps[1:]), 4), "setup_s": round(setup, 2),
            "workers": trainer.loaders.train.num_workers}


def _run_child(root: Path, out: Path, iters: int, cache: str, workers: str, channels: str) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(root), "--out", str(out),
           "--iters", str(iters), "--cache", cache, "--workers", workers, "--channels", channels]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "export"),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child for {root.name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(case_counts: list[int], quick: bool, cache: str = "disk", workers: str = "auto",
            scale: int = 1) -> dict[str, Any]:
    """Train briefly on synthetic datasets of each size, one fresh subprocess per size.

    Args:
        case_counts: dataset sizes, e.g. [20, 100, 400].
        quick: 4 iterations of a 4-8-16 channel net (else 30 of the 8-64 demo net).
        cache: ``data.cache`` of the runs; workers: ``data.num_workers``.
        scale: phantom grids ``scale`` times finer per axis (1: about 48 x 48 x 32 voxels).

    Returns:
        ``{"train_peak_rss_mb": {"20": MB, ...}, "loader_batch_s": {...}, "step_s": {...},
        "setup_s": {...}, "rss_growth_mb": MB, "settings": {...}}``, keyed by the case count as a string.
    """
    iters = 4 if quick else 30
    channels = "[4,8,16]" if quick else "[8,16,32,64]"
    result: dict[str, Any] = {k: {} for k in KEYS}
    with tempfile.TemporaryDirectory(prefix="bench_train_scale_") as tmp:
        pool = write_pool(Path(tmp) / "pool", scale=scale)
        for n in case_counts:
            root = write_dataset(Path(tmp) / f"cases{n}", n, pool)
            row = _run_child(root, Path(tmp) / f"runs{n}", iters, cache, workers, channels)
            for k in KEYS:
                result[k][str(n)] = row[k]
            result.setdefault("workers", row["workers"])
    rss = list(result["train_peak_rss_mb"].values())
    result["rss_growth_mb"] = round(rss[-1] - rss[0], 1)  # the import baseline (~1 GB) hides less here
    result["settings"] = {"cache": cache, "iters": iters, "channels": channels, "batch_size": 2,
                          "patch_size": [32, 32, 32], "cpus": os.cpu_count(), "pool_phantoms": POOL_SIZE,
                          "volume_shape_approx": [48 * scale, 48 * scale, 32 * scale], "resampling": False}
    return result


def _table(result: dict[str, Any]) -> str:
    from seg.table import format_table

    counts = list(result["train_peak_rss_mb"])
    rows = [[n, *(result[k][n] for k in KEYS)] for n in counts]
    return format_table(["cases", "peak_rss_mb", "loader_batch_s", "step_s", "setup_s"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few iterations, the smallest model")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--counts", type=int, nargs="+", default=COUNTS)
    parser.add_argument("--cache", choices=["disk", "memory", "none"], default="disk")
    parser.add_argument("--workers", default="auto", help="data.num_workers for the runs")
    parser.add_argument("--scale", type=int, default=1, help="phantom grids this many times finer per axis")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--iters", type=int, default=6, help=argparse.SUPPRESS)
    parser.add_argument("--channels", default="[4,8,16]", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        row = child(args.child, args.out, args.iters, args.cache, args.workers, args.channels)
        sys.stdout.write(json.dumps(row) + "\n")
        return
    t0 = time.perf_counter()
    result = measure(args.counts, args.quick, args.cache, args.workers, args.scale)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["command"] = " ".join(["python", "tools/bench_train_scale.py", *sys.argv[1:]])
    counts = list(result["train_peak_rss_mb"])
    result["rss_ratio_last_to_first"] = round(result["train_peak_rss_mb"][counts[-1]]
                                              / result["train_peak_rss_mb"][counts[0]], 3)
    print(_table(result))
    print(f"peak RSS {counts[-1]} / {counts[0]} cases: {result['rss_ratio_last_to_first']}x "
          f"(+{result['rss_growth_mb']} MB); {result['seconds']} s in all")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
