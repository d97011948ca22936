"""The warm service against one process per case and one batch call, on the demo's 3D cases.

    python tools/bench_serve.py --bundle demo_out/bundle --cases demo_out/data/imagesTs --json serve.json
    python tools/bench_serve.py --make-demo /tmp/bench_serve --json serve.json   # trains + exports the demo first

Three ways to segment the same cases with the same bundle (onnxruntime on the CPU):

- ``serve``: ``seg-run serve`` started once (models loaded, kept warm); 1, 4 and 16 concurrent
  clients each send cases over HTTP on loopback (``POST ...?wait=``: the answer is the label map) until
  ``--requests`` cases are done. Latency: one request, upload to label map.
- ``process per case``: ``seg-run predict`` run once per case, one after another (what a user of a
  one-scan-per-process tool does). Latency: one process, start to exit.
- ``batch``: one ``seg-run predict`` over a folder holding all the cases. Latency: the whole call.

Throughput is cases per second of wall time. The server's start-up (loading the model) is not in
its figures: that is what a warm service is for; the other two pay it in theirs. Prints a table;
``--json`` writes the rows, the settings and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from seg.table import format_table

REPO = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 4, 16)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_demo(out: Path, epochs: int | None = None) -> tuple[Path, Path]:
    """Train the 3D demo model and export it (``seg train`` + ``seg export``); returns (bundle, cases).

    ``epochs`` shortens the training: the network, and so the cost of a case, is the same.
    """
    bundle, runs, data = out / "bundle", out / "runs", out / "data"
    if not (bundle / "model.json").is_file():
        config = REPO / "configs" / "demo3d.yaml"
        extra = [f"train.epochs={epochs}"] if epochs else []
        subprocess.run(["seg", "train", str(config), f"data.root={data}", f"output_dir={runs}", *extra], check=True)
        subprocess.run(["seg", "export", str(runs / "demo3d"), "-o", str(bundle)], check=True)
    return bundle, data / "imagesTs"


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    values = np.asarray(seconds)
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def _row(method: str, clients: int, cases: int, wall: float, latencies: list[float]) -> dict[str, Any]:
    p50, p95 = _percentiles(latencies)
    return {"method": method, "clients": clients, "cases": cases, "wall_s": round(wall, 3),
            "cases_per_s": round(cases / wall, 3), "p50_s": round(p50, 3), "p95_s": round(p95, 3)}


def bench_service(bundle: Path, cases: list[Path], requests: int, workers: int, threads: int | None,
                  work: Path) -> list[dict[str, Any]]:
    """``seg-run serve`` once; then each concurrency level sends ``requests`` cases."""
    port = _free_port()
    command = [sys.executable, "-m", "seg_runtime", "serve", str(bundle), "--name", "demo", "--no-auth",
               "--port", str(port), "--store", str(work / "store"), "--provider", "cpu", "--workers", str(workers),
               "--queue-size", str(max(CONCURRENCY) * 2)] + (["--threads", str(threads)] if threads else [])
    log = open(work / "server.log", "wb")  # noqa: SIM115 - closed after the server stops
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, server)
        _post(url, cases[0])  # one warm-up request: the first onnxruntime run allocates its arenas
        return [_clients(url, cases, requests, clients) for clients in CONCURRENCY]
    finally:
        server.terminate()
        server.wait(60)
        log.close()


def _wait_ready(url: str, server: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"seg-run serve exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("seg-run serve did not become ready in 120 s")


def _post(url: str, case: Path) -> float:
    import httpx

    start = time.perf_counter()
    with open(case, "rb") as handle:
        response = httpx.post(f"{url}/v1/models/demo/jobs?wait=600", files={"file": (case.name, handle)},
                              timeout=700)
    if response.status_code != 200:
        raise SystemExit(f"request failed: {response.status_code} {response.text[:200]}")
    return time.perf_counter() - start


def _clients(url: str, cases: list[Path], requests: int, clients: int) -> dict[str, Any]:
    latencies: list[float] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            seconds = _post(url, cases[index % len(cases)])
            with lock:
                latencies.append(seconds)

    start = time.perf_counter()
    pool = [threading.Thread(target=client) for _ in range(clients)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return _row("serve (warm)", clients, requests, time.perf_counter() - start, latencies)


def bench_process_per_case(bundle: Path, cases: list[Path], count: int, work: Path) -> dict[str, Any]:
    """One ``seg-run predict`` process per case, one after another."""
    latencies = []
    start = time.perf_counter()
    for index in range(count):
        case = cases[index % len(cases)]
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "seg_runtime", "predict", str(bundle), "-i", str(case), "-o",
                        str(work / f"one_{index}"), "--provider", "cpu", "--no-progress", "--overwrite"],
                       check=True, stdout=subprocess.DEVNULL)
        latencies.append(time.perf_counter() - began)
    return _row("seg-run, one process per case", 1, count, time.perf_counter() - start, latencies)


def bench_batch(bundle: Path, cases: list[Path], count: int, work: Path) -> dict[str, Any]:
    """One ``seg-run predict`` over a folder of ``count`` cases."""
    folder = work / "batch_in"
    folder.mkdir()
    for index in range(count):
        shutil.copyfile(cases[index % len(cases)], folder / f"case{index:03d}.nii.gz")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "seg_runtime", "predict", str(bundle), "-i", str(folder), "-o",
                    str(work / "batch_out"), "--provider", "cpu", "--no-progress"], check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    return _row("seg-run, one batch call", 1, count, wall, [wall])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="the demo bundle (seg export of the demo3d run)")
    parser.add_argument("--cases", type=Path, help="folder of the demo's 3D test cases (imagesTs)")
    parser.add_argument("--make-demo", type=Path, metavar="OUT", help="train and export the demo into OUT first")
    parser.add_argument("--demo-epochs", type=int, default=None,
                        help="with --make-demo: train this many epochs (the cost per case does not depend on it)")
    parser.add_argument("--requests", type=int, default=48, help="cases per concurrency level (default 48)")
    parser.add_argument("--per-process", type=int, default=12, help="cases run one process each (default 12)")
    parser.add_argument("--workers", type=int, default=2, help="the server's --workers (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads per model (default 1)")
    parser.add_argument("--json", type=Path, help="write the rows and settings here")
    args = parser.parse_args(argv)
    if args.make_demo:
        args.bundle, args.cases = make_demo(args.make_demo, args.demo_epochs)
    if args.bundle is None or args.cases is None:
        parser.error("give --bundle and --cases, or --make-demo OUT")
    cases = sorted(p for p in args.cases.iterdir() if p.name.endswith(".nii.gz"))
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        work = Path(tmp)
        rows = bench_service(args.bundle, cases, args.requests, args.workers, args.threads, work)
        rows.append(bench_process_per_case(args.bundle, cases, args.per_process, work))
        rows.append(bench_batch(args.bundle, cases, args.per_process, work))
    per_process = rows[-2]["cases_per_s"]
    for row in rows:
        row["x_process_per_case"] = round(row["cases_per_s"] / per_process, 2)
    print(format_table(list(rows[0]), [list(r.values()) for r in rows]))
    if args.json:
        report = {"rows": rows, "settings": {k: str(v) for k, v in vars(args).items()},
                  "cases": [c.name for c in cases], "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                                                               "platform": platform.platform()},
                  "median_latency_s": {r["method"] + f" x{r['clients']}": r["p50_s"] for r in rows},
                  "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
