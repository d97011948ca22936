"""Inference speed and peak memory: torch eager vs onnxruntime vs MONAI's sliding window.

For each model: build it small and untrained (seeded), write a checkpoint, export it with
``export_bundle``, then predict one BraTS-sized case (240 x 240 x 155, 2 channels: the real
BraTS case when ../shared/data exists, else a synthetic one) three ways, each in a fresh
process whose peak RSS is read with ``getrusage(RUSAGE_CHILDREN)`` by a probe parent:

    torch   ``predict_folder`` with the torch backend (seg_runtime tiling, torch network)
    onnx    ``predict_folder`` with the ONNX backend (seg_runtime tiling, onnxruntime CPU; no torch)
    monai   the same read/preprocess/restore/write around ``monai.inferers.sliding_window_inference``
            (same patch, overlap, Gaussian sigma; TTA by flipping the whole volume)

    python tools/bench_inference.py                        # all models, no TTA (~5 min on 2 cores)
    python tools/bench_inference.py --models ag_unet --tta # adds the 8-fold mirroring TTA runs
    python tools/bench_inference.py --quick                # tiny volume, one model: a smoke run
    python tools/bench_inference.py --large                # 512 x 512 x 400 CT volume, peak RSS
    python tools/bench_inference.py --models ag_unet --compare-checkout ../old   # this tree vs another
                                                           # checkout, alternating, in one run

Seconds cover the whole case (read, preprocess, tiles, restore, write), not the model load;
with ``--repeat N`` the fastest of N runs in the same worker counts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BRATS = REPO.parent / "shared" / "data" / "brats2013-deepmedic"
DEFAULT_MODELS = ("ag_unet", "gla_unet", "region_unet", "monai_attention_unet")
RESULT_TAG = "BENCH_RESULT "
# The probe runs one worker and reports the peak RSS of its (only) child.
_PROBE = (
    "import json, resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(json.dumps({'rc': done.returncode, 'out': done.stdout, 'err': done.stderr[-3000:], 'peak_kb': peak}))\n"
)
log = logging.getLogger("bench_inference")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``--worker`` is internal: one timed run in a child process)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help=f"registered model names (default: {', '.join(DEFAULT_MODELS)})")
    parser.add_argument("--tta", action="store_true", help="also run every method with mirroring TTA (8x work)")
    parser.add_argument("--quick", action="store_true", help="tiny volume and net, first model only: seconds")
    parser.add_argument("--large", action="store_true", help="peak RSS of seg_runtime on a 512x512x400 CT volume")
    parser.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 64], help="width per level")
    parser.add_argument("--threads", type=int, help="torch / onnxruntime threads (default: their own)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per worker; the fastest counts")
    parser.add_argument("--synthetic", action="store_true", help="synthetic case even when ../shared/data exists")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--workdir", type=Path, help="keep bundles and outputs here (default: a temp folder)")
    parser.add_argument("--compare-checkout", type=Path, metavar="DIR",
                        help="also time the torch and onnx methods with the seg of another checkout (its own "
                        "export and worker), alternating with this one, and report this / other")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- workers (child side)


def _rss_mb() -> float:
    """This process's peak RSS so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """Run one timed prediction in this process (imports only what its method needs)."""
    from seg_runtime.options import PredictOptions
    from seg_runtime.predict import predict_folder

    if job["method"] == "onnx":
        from seg_runtime.session import OnnxBackend

        backend: Any = OnnxBackend(job["bundle"], provider="cpu", threads=job.get("threads"))
    else:
        import torch

        from seg.inference import load_backend

        if job.get("threads"):
            torch.set_num_threads(job["threads"])
        backend = load_backend(job["checkpoint"], device="cpu")
        if job["method"] == "monai":
            import monai.inferers  # noqa: F401  (imported before the clock starts)
    loaded_mb = _rss_mb()
    runs = []
    for _ in range(max(1, job.get("repeat", 1))):
        start = time.perf_counter()
        if job["method"] == "monai":
            _monai_folder(backend, job)
        else:
            options = PredictOptions(tta=job["tta"], overwrite=True, progress=False)
            manifest = predict_folder(job["input"], job["output"], backend, options)
            if manifest.summary["ok"] != 1:
                raise RuntimeError(f"prediction failed: {manifest.failures()}")
        runs.append(time.perf_counter() - start)
    return {"seconds": min(runs), "runs": runs, "loaded_rss_mb": loaded_mb, "threads": _threads(job)}


def _threads(job: dict[str, Any]) -> int:
    """CPU threads the job's engine used."""
    if job["method"] == "onnx":
        from seg_runtime.session import physical_cores

        return job.get("threads") or physical_cores()
    import torch

    return torch.get_num_threads()


def _monai_folder(backend: Any, job: dict[str, Any]) -> None:
    """The seg_runtime pipeline with MONAI's sliding window in place of ours."""
    import torch
    from monai.inferers import sliding_window_inference

    from seg_runtime.cases import discover_cases
    from seg_runtime.io import read_case, write_labels
    from seg_runtime.outputs import labels_on_input_grid

    bundle = backend.bundle
    cases, _ = discover_cases(job["input"], spatial_dims=3, in_channels=bundle.in_channels,
                              channel_files=bundle.channel_files)
    flips = [()] + ([(2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)] if job["tta"] else [])
    for case in cases:
        image, geometry = read_case(case, 3, bundle.in_channels)
        prepared, state = bundle.preprocessor.prepare(image, geometry)
        x = torch.from_numpy(prepared)[None]
        total = None
        with torch.inference_mode():
            for flip in flips:
                logits = sliding_window_inference(
                    torch.flip(x, flip) if flip else x, roi_size=bundle.patch_size,
                    sw_batch_size=backend.cfg.infer.batch_size, predictor=backend.model,
                    overlap=bundle.overlap, mode="gaussian", sigma_scale=0.125)
                probs = torch.softmax(logits, dim=1)
                probs = torch.flip(probs, flip) if flip else probs
                total = probs if total is None else total + probs
        restore = lambda channels, first, state=state: bundle.preprocessor.restore(channels, state)  # noqa: E731
        labels, _ = labels_on_input_grid((total / len(flips))[0].numpy(), restore)
        write_labels(Path(job["output"]) / f"{case.id}.nii.gz", labels, geometry)


# ----------------------------------------------------------------------------- parent side


def _checkout_env(checkout: Path | None) -> dict[str, str] | None:
    """The environment that makes ``checkout``'s seg and seg_runtime the imported ones (None: this tree's)."""
    if checkout is None:
        return None
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout), str(checkout / "export")])}


def run_job(job: dict[str, Any], checkout: Path | None = None) -> dict[str, Any]:
    """Run ``job`` in a fresh worker under the probe; its result plus the peak RSS (MB).

    With ``checkout``, the worker is that checkout's own ``tools/bench_inference.py`` on its own seg.
    """
    script = (checkout / "tools" / "bench_inference.py") if checkout else Path(__file__).resolve()
    command = [sys.executable, "-c", _PROBE, sys.executable, str(script), "--worker", json.dumps(job)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=_checkout_env(checkout))
    probe = json.loads(done.stdout)
    lines = [line for line in probe["out"].splitlines() if line.startswith(RESULT_TAG)]
    if probe["rc"] != 0 or not lines:
        raise RuntimeError(f"{job['method']} worker failed (rc {probe['rc']}):\n{probe['err']}")
    return {**json.loads(lines[-1][len(RESULT_TAG):]), "peak_rss_mb": probe["peak_kb"] / 1024.0}


def model_names(requested: list[str] | None, quick: bool) -> list[str]:
    """The requested models, else ag_unet plus whichever other defaults are registered."""
    from seg.models import MODELS

    names = requested or [n for n in DEFAULT_MODELS if n in MODELS.names()]
    unknown = [n for n in names if n not in MODELS.names()]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; registered: {', '.join(MODELS.names())}")
    return names[:1] if quick and not requested else names


def export_model(name: str, args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """Seeded untrained model → checkpoint → ``export_bundle``; returns (checkpoint, bundle)."""
    import torch

    from seg.config import load_config
    from seg.engine.checkpoint import Checkpoint, save_checkpoint
    from seg.export_onnx import export_bundle
    from seg.models import create_model

    config = REPO / "configs" / f"brats_{name}.yaml"
    overrides = [f"name=bench_{name}", f"output_dir={work}", "model.deep_supervision=false",
                 f"model.params={{channels: {list(args.channels)}}}"]
    if not config.is_file():
        config, overrides = REPO / "configs" / "brats_base.yaml", [f"model.name={name}", *overrides]
    if args.quick:
        overrides.append("train.patch_size=[16,16,16]")
    cfg = load_config(config, overrides)
    torch.manual_seed(0)
    model = create_model(cfg)
    checkpoint = work / name / "model.pt"
    save_checkpoint(Checkpoint(checkpoint, cfg.to_dict(), model.state_dict(), provenance={"epoch": 0}))
    report = export_bundle(checkpoint, work / name / "bundle")
    log.info("%s: exported (parity %.2g)", name, max(report.max_abs_diff_random, report.max_abs_diff_realistic))
    return checkpoint, report.bundle_dir


def brats_case(args: argparse.Namespace, work: Path) -> tuple[Path, str]:
    """A BraTS case folder: the first real validation case, else a synthetic one."""
    if BRATS.is_dir() and not args.synthetic and not args.quick:
        case = sorted(p for p in BRATS.iterdir() if p.is_dir())[0]
        return case, f"real BraTS {case.name}"
    shape = (48, 48, 32) if args.quick else (240, 240, 155)
    folder = work / "synthetic_case"
    if not folder.is_dir():
        _write_synthetic_brats(folder, shape)
    return folder, f"synthetic {'x'.join(map(str, shape))}"


def _write_synthetic_brats(folder: Path, shape: tuple[int, ...]) -> None:
    """Two z-scored 'MRI' channels: a brain ellipsoid with a bright blob, zeros outside."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    grid = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    brain = grid[0] ** 2 / 0.8 + grid[1] ** 2 / 0.9 + grid[2] ** 2 / 0.7 < 1
    blob = (grid[0] - 0.3) ** 2 + (grid[1] + 0.2) ** 2 + grid[2] ** 2 < 0.05
    folder.mkdir(parents=True)
    for index, name in enumerate(("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz")):
        image = (rng.normal(size=shape).astype(np.float32) * 0.3 + blob * (2.0 + index)) * brain
        nib.save(nib.Nifti1Image(image, np.diag([-1.0, -1.0, 1.0, 1.0])), folder / name)


def export_in_checkout(checkpoint: Path, bundle: Path, checkout: Path) -> Path:
    """The same checkpoint exported by another checkout's seg (its bundle schema, its runtime)."""
    code = "import sys; from seg.export_onnx import export_bundle; export_bundle(sys.argv[1], sys.argv[2])"
    done = subprocess.run([sys.executable, "-c", code, str(checkpoint), str(bundle)], cwd=checkout,
                          env=_checkout_env(checkout), capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"export with {checkout} failed:\n{done.stderr[-3000:]}")
    return bundle


def bench_models(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every (model, method, tta) combination on one case (and the other checkout's, alternating)."""
    case, source = brats_case(args, work)
    rows, other_rows = [], []
    for name in model_names(args.models, args.quick):
        checkpoint, bundle = export_model(name, args, work)
        other = args.compare_checkout and export_in_checkout(checkpoint, work / name / "bundle_other",
                                                            args.compare_checkout.resolve())
        for tta in (False, True) if args.tta else (False,):
            for method in ("torch", "onnx", "monai"):
                job = {"method": method, "tta": tta, "checkpoint": str(checkpoint), "bundle": str(bundle),
                       "input": str(case), "output": str(work / name / f"{method}_{int(tta)}"),
                       "threads": args.threads, "repeat": args.repeat}
                result = run_job(job)
                log.info("%s %s tta=%s: %.2fs, %.0f MB", name, method, tta, result["seconds"], result["peak_rss_mb"])
                rows.append({"model": name, "method": method, "tta": tta, **result})
                if other and method != "monai":
                    job = {**job, "bundle": str(other), "output": job["output"] + "_other"}
                    result = run_job(job, args.compare_checkout.resolve())
                    log.info("  other checkout: %.2fs, %.0f MB", result["seconds"], result["peak_rss_mb"])
                    other_rows.append({"model": name, "method": method, "tta": tta, **result})
    result = {"case": source, "rows": rows, "ratios": ratios(rows)}
    if other_rows:
        result.update(other_checkout=str(args.compare_checkout), other_rows=other_rows,
                      this_over_other=[{"model": a["model"], "method": a["method"], "tta": a["tta"],
                                        "seconds": a["seconds"] / b["seconds"],
                                        "peak_rss": a["peak_rss_mb"] / b["peak_rss_mb"]}
                                       for a in rows for b in other_rows
                                       if (a["model"], a["method"], a["tta"]) == (b["model"], b["method"], b["tta"])])
    return result


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """onnxruntime / torch and ours (torch) / MONAI seconds per model and TTA setting."""
    seconds = {(r["model"], r["tta"], r["method"]): r["seconds"] for r in rows}
    out = []
    for model, tta in dict.fromkeys((r["model"], r["tta"]) for r in rows):
        torch_s, onnx_s, monai_s = (seconds[(model, tta, m)] for m in ("torch", "onnx", "monai"))
        out.append({"model": model, "tta": tta, "onnx_over_torch": onnx_s / torch_s,
                    "ours_over_monai": torch_s / monai_s})
    return out


def print_tables(result: dict[str, Any]) -> None:
    """Per-run table, then the ratios."""
    from seg.table import format_table

    print(f"case: {result['case']}")
    print(format_table(["model", "method", "tta", "s/case", "peak RSS MB", "RSS after load MB", "threads"],
                       [[r["model"], r["method"], r["tta"], r["seconds"], round(r["peak_rss_mb"]),
                         round(r["loaded_rss_mb"]), r["threads"]] for r in result["rows"]]))
    print()
    print(format_table(["model", "tta", "onnx / torch", "ours / MONAI"],
                       [[r["model"], r["tta"], r["onnx_over_torch"], r["ours_over_monai"]] for r in result["ratios"]]))
    if result.get("this_over_other"):
        print(f"\nthis checkout / {result['other_checkout']} (same run, alternating):")
        print(format_table(["model", "method", "tta", "s/case other", "seconds ratio", "peak RSS ratio"],
                           [[r["model"], r["method"], r["tta"], o["seconds"], r["seconds"], r["peak_rss"]]
                            for r, o in zip(result["this_over_other"], result["other_rows"], strict=True)]))


# ----------------------------------------------------------------------------- --large


def bench_large(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """seg_runtime (onnxruntime CPU) on a synthetic CT volume at full resolution: time and peak RSS."""
    shape = (160, 160, 120) if args.quick else (512, 512, 400)
    patch = 64 if args.quick else 128
    bundle = _tiny_ct_bundle(work / "large_bundle", patch)
    scan = work / "large_in" / "ct.nii"
    if not scan.is_file():
        _write_synthetic_ct(scan, shape)
    job = {"method": "onnx", "tta": False, "bundle": str(bundle), "input": str(scan.parent),
           "output": str(work / "large_out"), "threads": args.threads}
    result = run_job(job)
    voxels = int(shape[0] * shape[1] * shape[2])
    row = {"shape": "x".join(map(str, shape)), "patch": patch, "seconds": result["seconds"],
           "peak_rss_mb": result["peak_rss_mb"], "loaded_rss_mb": result["loaded_rss_mb"],
           "float32_volume_mb": voxels * 4 / 2**20, "threads": result["threads"]}
    row["peak_over_float32_volume"] = (row["peak_rss_mb"] - row["loaded_rss_mb"]) / row["float32_volume_mb"]
    return {"large": row}


def _tiny_ct_bundle(folder: Path, patch: int) -> Path:
    """A 2-layer 3D CNN (1 → 8 → 2 channels) and its model.json: cheap, so the bench measures tiling."""
    import torch

    from seg_runtime.bundle import Bundle, save_bundle_json
    from seg_runtime.preprocess import PreprocessSpec

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 2, 1)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, patch, patch, patch),), str(folder / "model.onnx"),
                          dynamo=False, opset_version=17, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    spec = PreprocessSpec(orientation="RAS", target_spacing=None,
                          normalization=[{"scheme": "fixed", "clip": [-1000, 1000], "mean": 0.0, "std": 500.0}])
    save_bundle_json(Bundle(spatial_dims=3, in_channels=1, channel_names=["ct"], channel_files=None, num_classes=2,
                            labels={"background": 0, "body": 1}, regions={}, patch_size=[patch] * 3, overlap=0.5,
                            preprocess=spec, provenance={"model": "bench tiny CNN"}), folder)
    return folder


def _write_synthetic_ct(path: Path, shape: tuple[int, int, int]) -> None:
    """int16 HU: air, a body ellipse of soft tissue with lungs and a spine, noise (slice by slice)."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = x**2 / 0.8 + y**2 / 0.5 < 1
    lungs = ((np.abs(x) - 0.4) ** 2 / 0.06 + y**2 / 0.12) < 1
    spine = x**2 + (y + 0.35) ** 2 < 0.01
    volume = np.empty(shape, dtype=np.int16)
    for k in range(shape[2]):
        plane = np.where(body, 40.0, -1000.0) + np.where(lungs & body, -840.0, 0.0) + np.where(spine, 660.0, 0.0)
        volume[:, :, k] = np.clip(plane + rng.normal(0, 20, plane.shape), -1024, 3000).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.diag([0.8, 0.8, 1.25, 1.0])), path)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--worker``, one job); prints tables, writes ``--json``."""
    args = parse_args(argv)
    if args.worker:
        print(RESULT_TAG + json.dumps(worker(json.loads(args.worker))))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        result = bench_large(args, work) if args.large else bench_models(args, work)
    result["machine"] = {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "python": platform.python_version(),
                         "total_seconds": time.perf_counter() - start}
    if args.large:
        from seg.table import format_table

        row = result["large"]
        print(format_table(list(row), [list(row.values())]))
    else:
        print_tables(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
