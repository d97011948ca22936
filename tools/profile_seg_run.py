"""Where a ``seg-run predict`` spends its time, stage by stage: read, preprocess, network, stitching,
restore + post-process + write. One local run; each stage's function (wherever a seg_runtime module
holds it) is wrapped in a timer (wall
seconds, summed over the cases, whatever thread runs it: the local runner reads the next case ahead in
a thread while the current one is predicted, so stages may overlap and their sum may pass the wall time).

    python tools/profile_seg_run.py BUNDLE -i CASES -o OUT [--json FILE] [-- extra seg-run options]

Stitching is the sliding window's own work: ``infer_case`` less the network calls in it.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

SECONDS: dict[str, float] = defaultdict(float)
_LOCK = threading.Lock()


def _timed(name: str, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            with _LOCK:
                SECONDS[name] += time.perf_counter() - start

    return wrapper


def _instrument() -> None:
    """Wrap each stage's function wherever a seg_runtime module holds it (the runners import them by
    name), and the ONNX backend's network call."""
    import seg_runtime.cli  # noqa: F401  (loads every module that holds a stage)
    from seg_runtime import io, session, stages

    wrapped = {id(f): _timed(name, f) for name, f in (
        ("read", io.read_case), ("read + preprocess", stages.load_case), ("sliding window", stages.infer_case),
        ("restore + post-process + write", stages.finish_case), ("write label map", io.write_labels))}
    for name, module in list(sys.modules.items()):
        if name.startswith("seg_runtime"):
            for attribute, value in list(vars(module).items()):
                if id(value) in wrapped:
                    setattr(module, attribute, wrapped[id(value)])
    session.OnnxBackend.predict_batch = _timed("network", session.OnnxBackend.predict_batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("-i", "--input", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    args, extra = parser.parse_known_args()
    _instrument()
    from seg_runtime.cli import main as seg_run

    start = time.perf_counter()
    code = seg_run(["predict", str(args.bundle), "-i", str(args.input), "-o", str(args.output), "--overwrite",
                    "--no-progress", *[e for e in extra if e != "--"]])
    wall = time.perf_counter() - start
    s = SECONDS
    rows = {"wall (whole command)": wall, "read": s["read"], "preprocess": s["read + preprocess"] - s["read"],
            "network": s["network"], "stitching": s["sliding window"] - s["network"],
            "restore + post-process": s["restore + post-process + write"] - s["write label map"],
            "write label map": s["write label map"]}
    print(f"{'stage':28s}  {'seconds':>8s}  {'of wall':>7s}")
    for name, seconds in rows.items():
        print(f"{name:28s}  {seconds:8.1f}  {100 * seconds / wall:6.1f}%")
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(["python", "tools/profile_seg_run.py", *sys.argv[1:]]),
                                         "exit_code": code, "seconds": rows}, indent=2) + "\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
