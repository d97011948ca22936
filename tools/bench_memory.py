"""Peak RSS against --max-memory, for seg-run and seg predict, on CT-sized and 640^3 volumes.

``--max-memory`` is a bound on the data a run holds beyond the loaded model (the image as read, the
model grid, the blended scores, the restored channels, the label map, and the next case read ahead):
this measures it. For each tool and case, every limit runs in a fresh process whose peak RSS a probe
parent reads with ``getrusage(RUSAGE_CHILDREN)``; the "model" baseline is the same tool's peak on a
tiny case (interpreter, libraries and the loaded network). A run is within its bound when its peak
is at most the baseline plus the limit; a case the limit cannot hold must be refused up front with
the figure it would need (outcome ``refused``), never allowed to exceed it.

    python tools/bench_memory.py --json docs/benchmarks/DATE/memory.json     # ~10 min on 2 cores
    python tools/bench_memory.py --quick                                        # small volumes, seconds

Cases: ``ct`` 512 x 512 x 400 int16 at 0.8 x 0.8 x 1.25 mm, ``cube`` 640^3 int16 at 1 mm; the model
(ag_unet, channels 4-8-16, patch 96^3, overlap 0.25) resamples to 1.5 mm, as a CT model would.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The probe runs one command and reports the peak RSS of its (only) child, and its output.
_PROBE = (
    "import json, resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(json.dumps({'rc': done.returncode, 'out': done.stdout[-3000:], 'err': done.stderr[-3000:], "
    "'peak_kb': peak}))\n"
)
CASES = {"ct": ((512, 512, 400), (0.8, 0.8, 1.25)), "cube": ((640, 640, 640), (1.0, 1.0, 1.0))}
QUICK_CASES = {"ct": ((128, 128, 100), (0.8, 0.8, 1.25)), "cube": ((160, 160, 160), (1.0, 1.0, 1.0))}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limits", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0], help="--max-memory GB")
    parser.add_argument("--tools", nargs="+", default=["seg-run", "seg predict"], choices=["seg-run", "seg predict"])
    parser.add_argument("--quick", action="store_true", help="small volumes and limits (a smoke run)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--workdir", type=Path, help="keep the volumes and model here (default: a temp folder)")
    return parser.parse_args(argv)


def write_volume(path: Path, shape: tuple[int, ...], spacing: tuple[float, ...]) -> Path:
    """An int16 CT-like volume (air, a body ellipse, noise), uncompressed NIfTI, slab by slab."""
    import nibabel as nib
    import numpy as np

    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x**2 / 0.8 + y**2 / 0.5 < 1).astype(np.float32)
    volume = np.empty(shape, np.int16)
    for k in range(shape[2]):
        volume[:, :, k] = (np.where(body > 0, 40.0, -1000.0) + rng.normal(0, 20, body.shape)).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.diag([*spacing, 1.0])), path)
    return path


def make_model(work: Path) -> tuple[Path, Path]:
    """A seeded tiny ag_unet checkpoint (1 channel, 2 classes, 1.5 mm) and its exported bundle."""
    import torch

    from seg.config import load_config
    from seg.engine.checkpoint import Checkpoint, save_checkpoint
    from seg.export_onnx import export_bundle
    from seg.models import create_model

    checkpoint, bundle = work / "model.pt", work / "bundle"
    if bundle.is_dir():
        return checkpoint, bundle
    cfg = load_config(REPO / "configs" / "demo3d.yaml", [
        f"output_dir={work}", "data.labels={background: 0, body: 1}", "data.regions={}",
        "data.preprocess.target_spacing=[1.5,1.5,1.5]", "data.preprocess.normalization=[{scheme: fixed, "
        "clip: [-1000, 1000], mean: 0, std: 500}]", "model.deep_supervision=false",
        "model.params={channels: [4, 8, 16]}", "train.patch_size=[96,96,96]", "infer.overlap=0.25"])
    torch.manual_seed(0)
    save_checkpoint(Checkpoint(checkpoint, cfg.to_dict(), create_model(cfg).state_dict()))
    export_bundle(checkpoint, bundle)
    return checkpoint, bundle


def run(tool: str, model: Path, case: Path, out: Path, limit: float | None) -> dict[str, Any]:
    """One run of a tool over one case folder under the probe: outcome, peak RSS (MB), seconds."""
    bin_dir = Path(sys.executable).parent
    if tool == "seg-run":
        command = [str(bin_dir / "seg-run"), "predict", str(model), "-i", str(case), "-o", str(out)]
    else:
        command = [str(bin_dir / "seg"), "predict", "--model", str(model), "-i", str(case), "-o", str(out),
                   "--device", "cpu"]
    command += ["--overwrite", "--no-tta", "--no-progress"] + (["--max-memory", f"{limit:g}"] if limit else [])
    start = time.perf_counter()
    probe = json.loads(subprocess.run([sys.executable, "-c", _PROBE, *command], capture_output=True, text=True,
                                      check=True).stdout)
    seconds = time.perf_counter() - start
    record = out / "predictions.json"
    cases = json.loads(record.read_text())["cases"] if record.is_file() else []
    outcome = "ok" if probe["rc"] == 0 else "refused" if cases and cases[0]["status"] == "failed" else "error"
    error = cases[0].get("error") if cases and cases[0]["status"] == "failed" else probe["err"].strip()[-300:]
    return {"outcome": outcome, "peak_rss_mb": probe["peak_kb"] / 1024, "seconds": round(seconds, 1),
            "error": error if outcome != "ok" else None}


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    checkpoint, bundle = make_model(work)
    cases = QUICK_CASES if args.quick else CASES
    tiny = write_volume(work / "tiny" / "tiny.nii", (32, 32, 32), (1.5, 1.5, 1.5)).parent
    rows = []
    for tool in args.tools:
        model = bundle if tool == "seg-run" else checkpoint
        baseline = run(tool, model, tiny, work / "out_tiny", None)["peak_rss_mb"]
        for name, (shape, spacing) in cases.items():
            folder = write_volume(work / name / f"{name}.nii", shape, spacing).parent
            for limit in args.limits:
                result = run(tool, model, folder, work / f"out_{name}", limit)
                bound = baseline + limit * 1024
                rows.append({"tool": tool, "case": name, "shape": "x".join(map(str, shape)), "max_memory_gb": limit,
                             **result, "model_baseline_mb": round(baseline), "bound_mb": round(bound),
                             "within_bound": result["peak_rss_mb"] <= bound})
                print(f"  {tool} {name} --max-memory {limit:g}: {result['outcome']}, peak "
                      f"{result['peak_rss_mb']:.0f} MB (bound {bound:.0f})", file=sys.stderr)
    return {"rows": rows}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick and args.limits == [1.0, 2.0, 4.0, 8.0]:
        args.limits = [0.1, 0.5, 2.0]
    sys.path[:0] = [str(REPO), str(REPO / "export")]
    from seg.table import format_table

    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        work = args.workdir or Path(tmp)
        result = bench(args, work)
    result["machine"] = {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}
    print(format_table(["tool", "case", "max-memory GB", "outcome", "peak RSS MB", "model MB", "bound MB", "within",
                        "s"], [[r["tool"], r["case"], r["max_memory_gb"], r["outcome"], round(r["peak_rss_mb"]),
                                r["model_baseline_mb"], r["bound_mb"], r["within_bound"], r["seconds"]]
                               for r in result["rows"]]))
    for row in result["rows"]:
        if row["error"]:
            print(f"{row['tool']} {row['case']} {row['max_memory_gb']:g} GB: {row['error']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
