"""The planner's throughput assumption against a measurement (``seg plan --time-budget``).

``seg plan`` turns minutes per fold into epochs at an assumed training throughput in patch voxels
per second (``seg.data.plan_config.THROUGHPUT``, per device and dims). This writes a synthetic
nnU-Net raw dataset big enough for the device's largest patch, plans it as ``seg plan`` would, and
measures that plan two ways:

- **end to end**: ``fit`` for a few epochs (loader workers, augmentation, the bf16 step on CUDA),
  patch voxels per second of the epochs after the first (the first carries start-up and cuDNN's
  autotuning; the last, which validates, is not counted);
- **step only**: the same model, loss and optimiser on one batch already on the device: the
  ceiling the loader would have to feed.

Where end to end is far below step only, the loader (CPU augmentation) sets the pace.

    python tools/bench_plan_throughput.py --device cpu --dims 2 --iters 4          # a smoke run
    python tools/bench_plan_throughput.py --device gpu --gpu-memory 80 --json plan_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seg.table import format_table  # noqa: E402

SHAPES = {3: (160, 160, 160), 2: (1024, 1024)}  # bigger than the largest planned patch (128³ / 512²)


def write_dataset(root: Path, dims: int, cases: int) -> Path:
    """nnU-Net raw: a bright noisy ellipsoid (label 1) in noise, ``cases`` of :data:`SHAPES` each."""
    import nibabel as nib
    from PIL import Image

    ending = ".nii.gz" if dims == 3 else ".png"
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    shape = SHAPES[dims]
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in shape), indexing="ij"))
    for i in range(cases):
        rng = np.random.default_rng(i)
        centre = rng.uniform(-0.3, 0.3, dims).astype(np.float32).reshape(-1, *[1] * dims)
        label = (np.sqrt(((grid - centre) ** 2).sum(0)) < 0.35).astype(np.uint8)
        image = (rng.normal(0, 0.3, shape) + 1.0 + 2.0 * label).astype(np.float32)
        if dims == 3:
            affine = np.diag([1.0, 1.0, 1.0, 1.0])
            nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"case{i}_0000{ending}")
            nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"case{i}{ending}")
        else:
            Image.fromarray(np.clip(image * 60, 0, 255).astype(np.uint8)).save(root / "imagesTr" / f"case{i}_0000{ending}")
            Image.fromarray(label).save(root / "labelsTr" / f"case{i}{ending}")
    meta = {"channel_names": {"0": "MRI" if dims == 3 else "EM"}, "labels": {"background": 0, "lesion": 1},
            "numTraining": cases, "file_ending": ending}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def step_only(cfg: Any, steps: int) -> float:
    """Patch voxels per second of the training step alone (fixed batch on the device, as fit steps)."""
    import torch

    from seg.engine.device import resolve_device
    from seg.engine.optim import build_optimizer
    from seg.losses import build_loss
    from seg.models import create_model
    from seg.models.factory import is_deep_supervised

    device = resolve_device(cfg.train.device)
    model = create_model(cfg).to(device).train()
    deep = is_deep_supervised(model)
    loss_fn, opt = build_loss(cfg, deep), build_optimizer(model, cfg.train)
    patch, batch = cfg.train.patch_size, cfg.train.batch_size
    x = torch.randn(batch, len(cfg.data.channel_names), *patch, device=device)
    y = (torch.rand(batch, 1, *patch, device=device) > 0.7).float()
    amp = cfg.train.amp and device.type == "cuda"

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
            loss = loss_fn(out, y) if deep else loss_fn(out[0] if isinstance(out, list) else out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * batch * int(np.prod(patch)) / (time.perf_counter() - start)


def measure(dims: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from seg.config import config_from_dict
    from seg.data.plan_config import THROUGHPUT, plan_config
    from seg.engine.fit import fit

    root = write_dataset(work / f"data{dims}d", dims, args.cases)
    planned = plan_config(root, device=args.device, gpu_memory=args.gpu_memory, output_dir=work / "runs")
    raw = planned.config
    raw["name"] = f"throughput{dims}d"
    raw["train"].update(epochs=args.epochs, iters_per_epoch=args.iters, val_every=args.epochs, val_cases=1,
                        device="cuda" if args.device == "gpu" else "cpu")
    cfg = config_from_dict(raw, "planned")
    patch, batch = cfg.train.patch_size, cfg.train.batch_size
    fit(cfg, progress=False)
    rows = [json.loads(line) for line in (work / "runs" / cfg.name / "metrics.jsonl").read_text().splitlines()]
    seconds = statistics.median(r["seconds"] for r in rows[1:-1])  # not the first (start-up), not the last (validates)
    voxels = args.iters * batch * int(np.prod(patch))
    assumed = THROUGHPUT[args.device][dims]
    end_to_end = voxels / seconds
    step = step_only(cfg, args.iters)
    return {"dims": dims, "device": args.device, "patch": "x".join(map(str, patch)), "batch": batch,
            "model": f"{cfg.model.name} {cfg.model.size}", "workers": cfg.data.num_workers,
            "assumed": assumed, "end_to_end": end_to_end, "step_only": step,
            "end_to_end_vs_assumed": end_to_end / assumed, "end_to_end_vs_step": end_to_end / step}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="the plan's device budget")
    parser.add_argument("--gpu-memory", type=float, help="GB of GPU memory, as seg plan --gpu-memory")
    parser.add_argument("--dims", type=int, nargs="+", default=[3, 2], choices=[2, 3])
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4, help="epochs of fit (the first and last are not timed)")
    parser.add_argument("--iters", type=int, default=20, help="iterations per epoch (and step-only steps)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.epochs < 3:
        parser.error("--epochs must be at least 3 (the first and last epochs are not timed)")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(d, args, Path(tmp)) for d in args.dims]
    keys = list(rows[0])
    print(format_table(keys, [[f"{r[k]:.3g}" if isinstance(r[k], float) else r[k] for k in keys] for r in rows]))
    print("patch voxels per second; assumed: seg.data.plan_config.THROUGHPUT; "
          f"machine: {os.cpu_count()} CPUs" + (f", load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "cpus": os.cpu_count()}, indent=2) + "\n")
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
