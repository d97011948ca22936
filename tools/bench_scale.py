"""How cost grows with the number of cases: bookkeeping, batch inference, training memory.

    python tools/bench_scale.py --quick --json scale.json     # under 3 minutes on 2 cores
    python tools/bench_scale.py --only bookkeeping predict     # a subset of the sections

Sections (each prints a table; ``--json`` writes all of them):

- ``bookkeeping``: ms per case of the per-case record at 1k / 10k / 100k records already in the
  folder (median of 5 rounds, 9 without ``--quick``, the counts interleaved): appending (fsynced) the next 1,000 cases' lines, plus the skip-check of a rerun —
  reading every record once (its cost divided by the record count) and verifying 1,000 outputs
  against their recorded size and checksum. The record file is pre-filled in bulk (not timed)
  to reach each count. For comparison, the design it replaced (rewriting the whole JSON after
  every case) is timed at 1k and 10k.
- ``predict``: seg-run cases/s over >= 500 tiny NIfTI cases (a pointwise ONNX model, so the
  figure is the pipeline's overhead per case), for the local loop and ``--engine ray`` with 1
  and 2 model actors on a local Ray instance (which reserves one CPU per actor plus one for the
  read/write tasks: on a 2-core machine the 2-actor run oversubscribes the cores). Besides the
  overall rate, ``first_case_s`` (start-up: Ray, worker processes, one model per actor) and
  ``steady_cases_per_s`` (from the first to the last case record) tell start-up from throughput.
- ``train``: peak RSS, loader batch time and step time when training on synthetic datasets of
  20 / 100 / 400 cases, each in a fresh process (``tools/bench_train_scale.py``).

JSON keys: ``bookkeeping_ms_per_case`` (by record count), ``predict_cases_per_s`` (by
engine/workers), ``train_peak_rss_mb`` (by case count), and the raw rows of each section.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from seg.table import format_table
from seg_runtime.manifest import RunManifest
from seg_runtime.records import latest_states, now, verify_output

HERE = Path(__file__).resolve().parent
SAMPLE = 1000  # cases timed at each record count


def _bulk_fill(path: Path, count: int, output_dir: Path) -> None:
    """Write ``count`` ok records quickly (setup, not timed)."""
    lines = []
    stamp = now()
    for index in range(count):
        lines.append(json.dumps({"type": "case", "run": "fill", "time": stamp, "id": f"old{index:06d}",
                                 "inputs": [f"/scans/old{index:06d}.nii.gz"], "status": "ok",
                                 "output": str(output_dir / f"old{index:06d}.nii.gz"), "seconds": 1.0,
                                 "error": None, "bytes": 1234, "blake2b": "0" * 32}, separators=(",", ":")))
    path.write_text("\n".join(lines) + ("\n" if lines else ""))


def bookkeeping_at(records: int, folder: Path) -> dict[str, Any]:
    """Per-case cost of writing and skip-checking when ``records`` lines already exist."""
    folder.mkdir(parents=True)
    outputs = []
    for index in range(SAMPLE):  # small real files, so the checksum check reads something
        path = folder / f"new{index:06d}.nii.gz"
        path.write_bytes(np.random.default_rng(index).bytes(2048))
        outputs.append(path)
    _bulk_fill(folder / "predictions.jsonl", records - SAMPLE, folder)
    os.sync()  # the set-up's dirty pages must not be flushed by the timed fsyncs
    manifest = RunManifest(folder / "predictions.json", tool="bench")
    start = time.perf_counter()
    for path in outputs:
        manifest.add(path.name[:-7], inputs=[path], status="ok", output=path, seconds=0.1)
    write_s = time.perf_counter() - start
    manifest.close()
    start = time.perf_counter()
    states = latest_states(folder)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    trusted = sum(verify_output(states[p.name[:-7]].record, p) is None for p in outputs)
    verify_s = time.perf_counter() - start
    if trusted != SAMPLE or len(states) != records:
        raise RuntimeError(f"bookkeeping check failed: {trusted} trusted, {len(states)} states")
    ms = 1000 * (write_s / SAMPLE + read_s / records + verify_s / SAMPLE)
    return {"records": records, "write_ms": round(1000 * write_s / SAMPLE, 4),
            "read_ms": round(1000 * read_s / records, 4), "verify_ms": round(1000 * verify_s / SAMPLE, 4),
            "ms_per_case": round(ms, 4)}


def _interleaved(counts: list[int], repeats: int, tmp: Path) -> dict[int, list[dict[str, Any]]]:
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    for round_ in range(repeats):
        for n in counts if round_ % 2 == 0 else counts[::-1]:  # no count always runs first or last
            runs[n].append(bookkeeping_at(n, tmp / f"n{n}_r{round_}"))
    return runs


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median ``ms_per_case``."""
    ordered = sorted(rounds, key=lambda r: r["ms_per_case"])
    return dict(ordered[len(ordered) // 2])


def rewrite_design_at(records: int, folder: Path, samples: int = 20) -> float:
    """ms per case of the replaced design: the whole JSON rewritten atomically per case."""
    from seg_runtime.atomic import atomic_write_text

    folder.mkdir(parents=True)
    cases = [{"id": f"c{i}", "inputs": [f"/scans/c{i}.nii.gz"], "status": "ok",
              "output": f"/out/c{i}.nii.gz", "seconds": 1.0, "error": None} for i in range(records)]
    start = time.perf_counter()
    for _ in range(samples):
        atomic_write_text(folder / "predictions.json", json.dumps({"cases": cases}, indent=2) + "\n")
    return round(1000 * (time.perf_counter() - start) / samples, 3)


def bench_bookkeeping(quick: bool) -> dict[str, Any]:
    counts = [1000, 10000, 100000]
    repeats = 5 if quick else 9
    with tempfile.TemporaryDirectory() as tmp:
        # Rounds interleave the counts, so a slow spell of the disk (fsync) hits every count alike;
        # each count reports its median round.
        runs = _interleaved(counts, repeats, Path(tmp))
        rows = [dict(median_round(runs[n]), rounds=[r["ms_per_case"] for r in runs[n]]) for n in counts]
        old = {n: rewrite_design_at(n, Path(tmp) / f"old{n}", 5 if quick else 20) for n in (1000, 10000)}
    for row in rows:
        row["rewrite_design_ms"] = old.get(row["records"], "")
    print(format_table(list(rows[0]), [list(r.values()) for r in rows]))
    ratio = rows[-1]["ms_per_case"] / rows[0]["ms_per_case"]
    print(f"ms/case at 100k records / at 1k: {ratio:.2f}")
    return {"bookkeeping_ms_per_case": {str(r["records"]): r["ms_per_case"] for r in rows},
            "bookkeeping_ratio_100k_to_1k": round(ratio, 3), "bookkeeping_rows": rows}


def _tiny_bundle(folder: Path) -> Path:
    """A pointwise 3-class ONNX bundle (the runtime tests' helper)."""
    sys.path.insert(0, str(HERE.parent / "tests" / "runtime"))
    from runtime_helpers import make_bundle_dir

    return make_bundle_dir(folder, patch_size=[8, 8, 8])


def _tiny_cases(folder: Path, count: int) -> None:
    import nibabel as nib

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        image = nib.Nifti1Image(rng.normal(1.5, 1.0, (8, 8, 8)).astype(np.float32), np.eye(4))
        nib.save(image, str(folder / f"case{index:05d}.nii.gz"))


def bench_predict(quick: bool) -> dict[str, Any]:
    from seg_runtime.options import PredictOptions
    from seg_runtime.predict import predict_folder
    from seg_runtime.runners.ray_data import RayOptions, RayRunner
    from seg_runtime.session import OnnxBackend

    count = 500 if quick else 2000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle = _tiny_bundle(Path(tmp) / "bundle")
        _tiny_cases(Path(tmp) / "in", count)
        backend = OnnxBackend(bundle, provider="cpu", threads=1)
        for engine, workers in (("local", 1), ("ray", 1), ("ray", 2)):
            runner = None if engine == "local" else RayRunner(RayOptions(num_workers=workers), progress=False)
            start, start_wall = time.perf_counter(), time.time()
            manifest = predict_folder(Path(tmp) / "in", Path(tmp) / f"out_{engine}{workers}", backend,
                                      PredictOptions(progress=False), runner)
            seconds = time.perf_counter() - start
            if manifest.summary["ok"] != count:
                raise RuntimeError(f"{engine}: {manifest.summary}")
            first, last = _first_and_last_case(manifest)
            rows.append({"engine": engine, "workers": workers, "cases": count, "seconds": round(seconds, 2),
                         "cases_per_s": round(count / seconds, 1),
                         "first_case_s": round(first - start_wall, 2),
                         "steady_cases_per_s": round((count - 1) / max(last - first, 1e-9), 1)})
            print(f"  {engine} x{workers}: {count / seconds:.1f} cases/s", file=sys.stderr)
            _shutdown_ray()  # each Ray run starts its own local instance, sized for its actors
    print(format_table(list(rows[0]), [list(r.values()) for r in rows]))
    return {"predict_cases_per_s": {f"{r['engine']}/{r['workers']}": r["cases_per_s"] for r in rows},
            "predict_rows": rows}


def _first_and_last_case(manifest: RunManifest) -> tuple[float, float]:
    """Wall-clock times of the run's first and last case record (start-up vs steady state)."""
    from datetime import datetime

    stamps = [datetime.fromisoformat(case["time"]).timestamp() for case in manifest.iter_cases()]
    return min(stamps), max(stamps)


def _shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def bench_train(quick: bool) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("bench_train_scale", HERE / "bench_train_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.measure([20, 100, 400], quick)
    rss = result["train_peak_rss_mb"]
    rows = [[n, rss[n], result["loader_batch_s"][n], result["step_s"][n]] for n in rss]
    print(format_table(["cases", "peak RSS MB", "loader batch s", "step s"], rows))
    return result


SECTIONS = {"bookkeeping": bench_bookkeeping, "predict": bench_predict, "train": bench_train}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer cases and samples (under 3 minutes)")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    result: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "quick": args.quick}
    for name in args.only:
        print(f"== {name}")
        start = time.perf_counter()
        result.update(SECTIONS[name](args.quick))
        result[f"{name}_bench_s"] = round(time.perf_counter() - start, 1)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
